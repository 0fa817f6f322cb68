//! The threads that share the forward pass's parallel loops.
//!
//! A decoded token runs about 150 short loops (each matrix product, each layer's attention),
//! tens of microseconds apiece. Handing each to a general pool costs a wake-up and a sleep per
//! loop, which on two cores was a quarter of the time. Here the calling thread works too, and
//! the other threads spin between loops for a while before they sleep, so a loop starts within
//! a microsecond of the last one ending (llama.cpp's threads do the same).

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle thread spins for the next loop before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// The process's team: one thread per core (the caller counts as one), or
/// `SWITCHBOARD_LOCAL_THREADS`.
pub fn global() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let threads = std::env::var("SWITCHBOARD_LOCAL_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        Team::new(threads)
    })
}

/// Runs `task(i)` for every `i < tasks` on the global team, and returns when all have run.
pub fn for_each(tasks: usize, task: impl Fn(usize) + Sync) {
    global().for_each(tasks, task);
}

/// A buffer's rows of `width`, one for each task of a loop to take with [`part`].
pub fn split_rows<T>(buffer: &mut [T], width: usize) -> Vec<Mutex<&mut [T]>> {
    buffer.chunks_mut(width).map(Mutex::new).collect()
}

/// A task's own part of a loop's output: each task locks only its own, so the lock is never
/// contended, nor poisoned but by a panic that [`Team::for_each`] raises anyway.
pub fn part<T>(part: &Mutex<T>) -> MutexGuard<'_, T> {
    part.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Team {
    shared: Arc<Shared>,
    threads: usize,
    /// One loop at a time (two engines may share the team).
    running: Mutex<()>,
}

/// The loop being run, as the threads see it.
struct Job {
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    /// Bumped for every loop: a thread that sees a new value joins in.
    epoch: AtomicUsize,
    /// The current loop; valid from its epoch's bump until `busy` is back to zero.
    job: AtomicPtr<Job>,
    /// Per thread, the next task of its share: each thread starts on a contiguous share of the
    /// tasks (a product's rows stream from memory in order, which the prefetchers need), then
    /// helps with what is left of the others'.
    cursors: Vec<Cursor>,
    /// Threads other than the caller still working on the current loop.
    busy: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    sleeping: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A task counter on a cache line of its own.
#[repr(align(128))]
struct Cursor(AtomicUsize);

thread_local! {
    /// Set while a thread runs a task: a loop inside a task runs there, in order.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running a task until dropped (also when a task unwinds).
struct InTask;

impl InTask {
    fn enter() -> Self {
        IN_TASK.set(true);
        InTask
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.set(false);
    }
}

impl Team {
    /// A team of `threads` (at least one: the caller's).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            cursors: (0..threads).map(|_| Cursor(AtomicUsize::new(0))).collect(),
            busy: AtomicUsize::new(0),
            panic: Mutex::new(None),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        for i in 1..threads {
            let for_thread = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("local-engine-{i}"))
                .spawn(move || for_thread.serve(i));
            if spawned.is_err() {
                // Fewer threads than asked for: the loops still run, more slowly.
                return Self::with(shared, i);
            }
        }
        Self::with(shared, threads)
    }

    fn with(shared: Arc<Shared>, threads: usize) -> Self {
        Self {
            shared,
            threads,
            running: Mutex::new(()),
        }
    }

    /// Runs `task(i)` for every `i < tasks`, each thread a contiguous share first, then the
    /// rest of the others'; returns when all have run. A panic in a task is raised here once every thread
    /// has let go of `task`.
    pub fn for_each(&self, tasks: usize, task: impl Fn(usize) + Sync) {
        if tasks <= 1 || self.threads == 1 || IN_TASK.get() {
            (0..tasks).for_each(task);
            return;
        }
        let _one_loop = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &self.shared;
        let task: &(dyn Fn(usize) + Sync) = &task;
        // SAFETY: only the lifetime is erased. The threads call `task` between the epoch's
        // bump and their decrement of `busy`, and this function does not return (or unwind)
        // before `busy` is zero again.
        let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        let mut job = Job { task, tasks };
        for (share, cursor) in shared.cursors.iter().enumerate() {
            cursor
                .0
                .store(share_start(share, tasks, self.threads), Ordering::Relaxed);
        }
        shared.busy.store(self.threads - 1, Ordering::Relaxed);
        shared.job.store(&mut job, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::Release);
        if *shared.sleeping.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            shared.wake.notify_all();
        }
        let own = catch_unwind(AssertUnwindSafe(|| shared.work(&job, 0)));
        let mut spins = 0u32;
        while shared.busy.load(Ordering::Acquire) != 0 {
            // A thread the system has not scheduled yet: let it have this core.
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        shared.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(panic) = own {
            resume_unwind(panic);
        }
        let theirs = shared
            .panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(panic) = theirs {
            resume_unwind(panic);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _sleeping = self.shared.sleeping.lock();
        self.shared.wake.notify_all();
    }
}

impl Shared {
    /// Runs thread `me`'s share of `job`, then what is left of the others'.
    fn work(&self, job: &Job, me: usize) {
        let _in_task = InTask::enter();
        let threads = self.cursors.len();
        for share in (me..threads).chain(0..me) {
            let end = share_start(share + 1, job.tasks, threads);
            loop {
                let i = self.cursors[share].0.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                // SAFETY: `Team::for_each` keeps the task alive while `busy` counts this
                // thread (or while it runs it itself).
                unsafe { (*job.task)(i) };
            }
        }
    }

    /// A team thread: joins every loop, spinning between loops, sleeping when none came for
    /// a while.
    fn serve(&self, me: usize) {
        // The epoch the team started at: a loop may be published before this thread runs.
        let mut seen = 0;
        loop {
            let spun = Instant::now();
            let mut spins = 0u32;
            let mut epoch = self.epoch.load(Ordering::Acquire);
            while epoch == seen && !self.stop.load(Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                // The clock now and then only: reading it costs more than a spin.
                if spins.is_multiple_of(256) && spun.elapsed() > SPIN {
                    let mut sleeping = self.sleeping.lock().unwrap_or_else(|e| e.into_inner());
                    *sleeping += 1;
                    while self.epoch.load(Ordering::Acquire) == seen
                        && !self.stop.load(Ordering::Relaxed)
                    {
                        sleeping = self.wake.wait(sleeping).unwrap_or_else(|e| e.into_inner());
                    }
                    *sleeping -= 1;
                } else {
                    std::hint::spin_loop();
                }
                epoch = self.epoch.load(Ordering::Acquire);
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            seen = epoch;
            let job = self.job.load(Ordering::Relaxed);
            // SAFETY: the epoch's bump (acquired above) published the job, which stays valid
            // until this thread decrements `busy`.
            let outcome = catch_unwind(AssertUnwindSafe(|| self.work(unsafe { &*job }, me)));
            if let Err(panic) = outcome {
                *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(panic);
            }
            self.busy.fetch_sub(1, Ordering::Release);
        }
    }
}

/// The first task of thread `share`'s share (`share == threads`: the end).
fn share_start(share: usize, tasks: usize, threads: usize) -> usize {
    tasks * share / threads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let team = Team::new(3);
        for tasks in [0, 1, 2, 7, 1000] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            team.for_each(tasks, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn loops_after_a_sleep_and_inside_tasks_still_run() {
        let team = Team::new(2);
        std::thread::sleep(SPIN * 3); // the other thread is asleep now
        let total = AtomicUsize::new(0);
        team.for_each(10, |_| {
            // A loop inside a task runs on that thread.
            team.for_each(10, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        for _ in 0..20 {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                team.for_each(64, |i| assert!(i != 33, "task 33 fails"));
            }));
            assert!(outcome.is_err());
            let done = AtomicUsize::new(0);
            team.for_each(64, |_| {
                done.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(done.load(Ordering::Relaxed), 64);
        }
    }
}
