use std::io::Read;

use anyhow::Context;
use clap::Parser;
use switchboard_gateway::auth::{KeyHash, generate_key};
use switchboard_gateway::cli::{Cli, Command, KeysCommand};
use switchboard_gateway::config::Config;
use switchboard_gateway::server::{Server, shutdown_signal};
use switchboard_gateway::telemetry;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            telemetry::init(log_format);
            let config = Config::load(&config)?;
            let addr = listen.unwrap_or(config.listen);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let server = Server::bind(&config, addr).await?;
                server.run(shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Check { config } => {
            let loaded = Config::load(&config)?;
            println!(
                "{}: ok ({} providers, {} tenants)",
                config.display(),
                loaded.providers.len(),
                loaded.tenants.len()
            );
            Ok(())
        }
        Command::Keys { command } => {
            match command {
                KeysCommand::Hash => {
                    let mut key = String::new();
                    std::io::stdin()
                        .read_to_string(&mut key)
                        .context("cannot read the key from standard input")?;
                    let key = key.trim();
                    anyhow::ensure!(!key.is_empty(), "no key on standard input");
                    println!("{}", KeyHash::of(key));
                }
                KeysCommand::Generate => {
                    let key = generate_key();
                    println!("key:  {key}\nhash: {}", KeyHash::of(&key));
                }
            }
            Ok(())
        }
    }
}
