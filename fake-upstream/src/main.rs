//! `fake-upstream [--listen ADDR] [--key KEY]`: runs the fake as its own process (for the SDK
//! tests and the benchmarks) and prints `listening on http://ADDR` once it accepts connections.

use std::net::SocketAddr;

#[tokio::main]
async fn main() {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => match addr.parse() {
                Ok(addr) => listen = addr,
                Err(e) => exit(&format!("--listen {addr}: {e}")),
            },
            ("--key", Some(value)) => key = Some(value),
            _ => exit("usage: fake-upstream [--listen ADDR] [--key KEY]"),
        }
    }
    let fake = match fake_upstream::FakeUpstream::start_on(listen, key).await {
        Ok(fake) => fake,
        Err(e) => exit(&format!("cannot listen on {listen}: {e}")),
    };
    println!("listening on http://{}", fake.addr());
    let _ = tokio::signal::ctrl_c().await;
}

fn exit(message: &str) -> ! {
    eprintln!("fake-upstream: {message}");
    std::process::exit(2);
}
