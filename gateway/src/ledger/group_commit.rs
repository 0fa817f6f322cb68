//! Group commit: requests that need their records on disk ask for a flush and wait; one thread
//! runs the flushes, each covering every record written before it started, so that concurrent
//! requests share one fsync instead of queueing for one each. (sled's own `flush_async` was
//! seen to leave its callers waiting forever under load, so the thread is ours.)

use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

/// Tickets are numbered; a flush that started after ticket `n` was taken covers it.
#[derive(Default)]
struct Requests {
    /// The last ticket taken.
    taken: u64,
    stopping: bool,
}

pub(super) struct GroupCommit {
    requests: Arc<(Mutex<Requests>, Condvar)>,
    /// The last ticket whose records are on disk.
    flushed: watch::Receiver<u64>,
}

impl GroupCommit {
    /// Starts the flushing thread; `flush` writes everything written so far to disk.
    pub(super) fn start(
        flush: impl Fn() -> Result<(), sled::Error> + Send + 'static,
    ) -> std::io::Result<Self> {
        let requests = Arc::new((Mutex::new(Requests::default()), Condvar::new()));
        let (done, flushed) = watch::channel(0);
        let shared = requests.clone();
        std::thread::Builder::new()
            .name("ledger-commit".to_owned())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut covered = 0;
                loop {
                    let through = {
                        let mut requests = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while requests.taken == covered && !requests.stopping {
                            requests = wake.wait(requests).unwrap_or_else(|e| e.into_inner());
                        }
                        if requests.stopping {
                            return;
                        }
                        requests.taken
                    };
                    if let Err(error) = flush() {
                        // The records stay in sled's buffers; its periodic flush retries.
                        tracing::error!(%error, "cannot flush the ledger");
                    }
                    covered = through;
                    done.send_replace(through);
                }
            })?;
        Ok(Self { requests, flushed })
    }

    /// Returns once every record written before the call is on disk.
    pub(super) async fn wait(&self) {
        let ticket = {
            let (lock, wake) = &*self.requests;
            let mut requests = lock.lock().unwrap_or_else(|e| e.into_inner());
            requests.taken += 1;
            wake.notify_one();
            requests.taken
        };
        let mut flushed = self.flushed.clone();
        // An error means the thread is gone, which happens only when the ledger is dropped.
        let _ = flushed.wait_for(|through| *through >= ticket).await;
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        let (lock, wake) = &*self.requests;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stopping = true;
        wake.notify_one();
    }
}
