//! What Switchboard adds to a remote request: the same open-loop load at fixed request rates is
//! sent to the fake upstream directly and through a `switchboard serve` process in front of it, in
//! the same run on the same machine; the difference in latency percentiles is the gateway's cost.
//! Then the rate is raised until the gateway no longer keeps up.
//!
//! Run it with `bench/gateway_overhead.sh` (builds the release binaries first). The load is open
//! loop: each request is sent at its scheduled time whether or not earlier ones have returned, so
//! a slow server cannot slow the load down (no coordinated omission). Latency runs from the
//! moment a request is sent, not from its scheduled time, so that the millisecond granularity of
//! the sender's timer does not blur a sub-millisecond difference. `BENCH_DURABLE_ANSWERS=false`
//! measures the gateway with answers that do not wait for their ledger records to reach the disk.
//!
//! Fleet mode: when `BENCH_REDIS_URL` and `BENCH_POSTGRES_URL` are set (`gateway_overhead.sh`
//! starts both servers when Debian's `redis-server` and `postgresql` are installed), a second
//! table compares one process on its own with a fleet of one and of three replicas (the load
//! spread over them in turn, as a load balancer would) on the same policy: a routing section and
//! a budgeted, rate-limited tenant, so that every request is admitted by Redis, reserves and
//! settles its estimate there, and ships its ledger record to PostgreSQL.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const CLIENT_KEY: &str = "sk-bench-client";
/// sha256 of CLIENT_KEY
const CLIENT_KEY_HASH: &str =
    "sha256:816adcba23292967efcb2e7dabc6a41077a064cfc02cadfe27c984e8812a8e04";
const BODY: &str = r#"{"model":"bench-model","messages":[{"role":"user","content":"How do I reset my VPN password?"}]}"#;

/// Kills a child process when dropped, so that a failed run leaves nothing behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    rate: u32,
    sent: usize,
    errors: usize,
    achieved_rps: f64,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Run {
    fn quantile(&self, q: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        let index = ((self.latencies.len() as f64 * q) as usize).min(last);
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn merge(&mut self, other: Run) {
        self.achieved_rps = (self.achieved_rps * self.sent as f64
            + other.achieved_rps * other.sent as f64)
            / (self.sent + other.sent) as f64;
        self.sent += other.sent;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }
}

fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    let (_fake, fake_url) = start_fake(&bin)?;
    let (_gateway, gateway_url) = start_gateway(&bin, &fake_url)?;
    let direct = format!("{fake_url}/v1/chat/completions");
    let through = format!("{gateway_url}/v1/chat/completions");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // reqwest is built without a default TLS backend; it never uses one here (plain HTTP on
    // loopback) but insists on having one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        // Warm both paths: connections, allocator, the gateway's lazily built metric series.
        load(&client, &direct, 500, Duration::from_secs(1)).await;
        load(&client, &through, 500, Duration::from_secs(1)).await;

        println!("# gateway overhead, non-streamed chat completions, {seconds} s per rate");
        println!(
            "{:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}",
            "rate", "path", "sent", "errors", "rps", "p50_ms", "p99_ms", "max_ms", "added_p50", "added_p99"
        );
        for rate in [500, 1000, 2000] {
            // Alternating halves, so that a drift of the machine hits both paths alike.
            let half = Duration::from_secs(seconds).div_f64(2.0);
            let mut base = load(&client, &direct, rate, half).await;
            let mut gw = load(&client, &through, rate, half).await;
            base.merge(load(&client, &direct, rate, half).await);
            gw.merge(load(&client, &through, rate, half).await);
            print_run("direct", &base, None);
            print_run("gateway", &gw, Some(&base));
        }

        println!("# max sustained rate through the gateway (achieved >= 97% of target, p99 < 25 ms, no errors)");
        let mut best = None;
        for rate in [2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000, 28000, 32000] {
            let gw = load(&client, &through, rate, Duration::from_secs(seconds)).await;
            print_run("gateway", &gw, None);
            let kept_up = gw.errors == 0
                && gw.achieved_rps >= 0.97 * f64::from(rate)
                && gw.p99() < Duration::from_millis(25);
            if !kept_up {
                break;
            }
            best = Some(rate);
        }
        match best {
            Some(rate) => println!("max sustained rate: {rate} requests/s"),
            None => println!("max sustained rate: below 2000 requests/s"),
        }
        if let (Ok(redis), Ok(postgres)) = (
            std::env::var("BENCH_REDIS_URL"),
            std::env::var("BENCH_POSTGRES_URL"),
        ) {
            fleet(&bin, &client, &fake_url, &direct, seconds, &redis, &postgres).await?;
        }
        anyhow::Ok(())
    })
}

/// One process on its own against fleets of one and three replicas, on the same routed policy.
async fn fleet(
    bin: &Path,
    client: &reqwest::Client,
    fake_url: &str,
    direct: &str,
    seconds: u64,
    redis: &str,
    postgres: &str,
) -> anyhow::Result<()> {
    let env = [
        ("SWITCHBOARD_REDIS_URL", redis),
        ("SWITCHBOARD_POSTGRES_URL", postgres),
    ];
    let routed = |fleet: bool| {
        let mut extra = ROUTED.to_owned();
        if fleet {
            extra.push_str(FLEET);
        }
        extra
    };
    let (_single, single) = start_gateway_with(bin, fake_url, &routed(false), &[])?;
    let (_one, one) = start_gateway_with(bin, fake_url, &routed(true), &env)?;
    let mut three = Vec::new();
    let mut processes = Vec::new();
    for _ in 0..3 {
        let (process, url) = start_gateway_with(bin, fake_url, &routed(true), &env)?;
        processes.push(process);
        three.push(format!("{url}/v1/chat/completions"));
    }
    let paths = [
        ("single", vec![format!("{single}/v1/chat/completions")]),
        ("fleet_1", vec![format!("{one}/v1/chat/completions")]),
        ("fleet_3", three),
    ];
    for (_, urls) in &paths {
        load_spread(client, urls, 500, Duration::from_secs(1)).await;
    }
    println!("# fleet mode: routed policy, budgeted and rate-limited tenant, Redis + PostgreSQL");
    for rate in [500, 1000] {
        let half = Duration::from_secs(seconds).div_f64(2.0);
        let mut base = load(client, direct, rate, half).await;
        let mut runs: Vec<Run> = Vec::new();
        for (_, urls) in &paths {
            runs.push(load_spread(client, urls, rate, half).await);
        }
        base.merge(load(client, direct, rate, half).await);
        for (run, (_, urls)) in runs.iter_mut().zip(&paths) {
            run.merge(load_spread(client, urls, rate, half).await);
        }
        print_run("direct", &base, None);
        for (run, (name, _)) in runs.iter().zip(&paths) {
            print_run(name, run, Some(&base));
        }
    }
    Ok(())
}

/// The routed policy of the fleet table: the local tier is the default SmolLM2 (loaded, never
/// asked: the requests name the remote model), the bench tenant has a budget it never spends
/// and a rate limit it never reaches.
const ROUTED: &str = "local_models:\n  - { name: slm, default_model: smollm2 }\nrouting:\n  reference_model: bench-model\n  tiers:\n    - { name: local, below: 0.5, targets: [slm] }\n    - { name: remote, targets: [bench-model] }\n";

const FLEET: &str = "fleet:\n  replicas: 3\n  redis: { key_prefix: bench }\n  postgres: {}\n";

fn print_run(path: &str, run: &Run, base: Option<&Run>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let added = |f: fn(&Run) -> Duration| {
        base.map_or_else(String::new, |b| format!("{:+.3}", ms(f(run)) - ms(f(b))))
    };
    println!(
        "{:>6} {:>10} {:>9} {:>9} {:>9.0} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>11}",
        run.rate,
        path,
        run.sent,
        run.errors,
        run.achieved_rps,
        ms(run.p50()),
        ms(run.p99()),
        ms(run.max()),
        added(Run::p50),
        added(Run::p99),
    );
}

/// Sends `rate` requests per second for `duration`, open loop, and waits for all of them.
async fn load(client: &reqwest::Client, url: &str, rate: u32, duration: Duration) -> Run {
    load_spread(client, &[url.to_owned()], rate, duration).await
}

/// [`load`], the requests sent to `urls` in turn.
async fn load_spread(
    client: &reqwest::Client,
    urls: &[String],
    rate: u32,
    duration: Duration,
) -> Run {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let result = client
                .post(&url)
                .bearer_auth(CLIENT_KEY)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await;
            let ok = match result {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                let latency = sent.elapsed();
                latencies.lock().unwrap().push(latency);
            } else {
                *errors.lock().unwrap() += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed();
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let errors = *errors.lock().unwrap();
    Run {
        rate,
        sent: total,
        errors,
        achieved_rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    }
}

fn start_fake(bin: &Path) -> anyhow::Result<(Process, String)> {
    let mut child = Command::new(bin.join("fake-upstream"))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start fake-upstream; run bench/gateway_overhead.sh")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .context("fake-upstream did not say where it listens")?
        .to_owned();
    Ok((Process(child), url))
}

fn start_gateway(bin: &Path, fake_url: &str) -> anyhow::Result<(Process, String)> {
    start_gateway_with(bin, fake_url, "", &[])
}

/// A gateway whose policy has `extra` sections, with `env` in its environment.
fn start_gateway_with(
    bin: &Path,
    fake_url: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Process, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = std::env::temp_dir().join(format!("switchboard-bench-{port}.yaml"));
    let ledger = std::env::temp_dir().join(format!("switchboard-bench-ledger-{port}"));
    // BENCH_DURABLE_ANSWERS=false: answers do not wait for their ledger records' fsync.
    let durable = std::env::var("BENCH_DURABLE_ANSWERS").unwrap_or_else(|_| "true".to_owned());
    std::fs::write(
        &config,
        format!(
            "ledger:\n  path: {}\n  durable_answers: {durable}\nproviders:\n  - name: fake\n    kind: openai\n    base_url: {fake_url}/v1\n    models:\n      - name: bench-model\n        price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\ntenants:\n  - name: bench\n    api_key_hashes: [\"{CLIENT_KEY_HASH}\"]\n    allowed_models: [\"*\"]\n{}{extra}",
            ledger.display(),
            if extra.is_empty() {
                ""
            } else {
                "    budget: { daily_usd: 1000000 }\n    rate_limit: { requests_per_minute: 10000000 }\n"
            },
        ),
    )?;
    let child = Command::new(bin.join("switchboard"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start switchboard; run bench/gateway_overhead.sh")?;
    let process = Process(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("switchboard did not start listening within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((process, url))
}
