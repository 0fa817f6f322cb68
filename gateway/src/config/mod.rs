//! The policy file (`policies/default.yaml` ships): where the gateway listens, its limits, the
//! upstream providers with their models and prices, the local models, the tenants with their
//! key hashes and budgets, and the routing rules. One module per section, each of plain data:
//! [`limits`] (listen, limits, upstream retries), [`providers`], [`models`] (local and embedding
//! models, the default models' ids), [`router`], [`tenants`], [`ledger`], [`fleet`], [`policy_rules`] (the
//! routing rules and tenants' rules, built and checked by the `switchboard-policies` crate).
//! Runtime modules read the config; it reads none of them.
//!
//! Parsing is strict (unknown keys are errors, so a typo never silently falls back to a default),
//! and [`Config::from_yaml`] reports every problem at once ([`validate`]), each at the line and
//! column of the offending entry, with a hint.

pub mod fleet;
pub mod ledger;
pub mod limits;
pub mod models;
pub mod policy_rules;
pub mod providers;
pub mod router;
mod seconds;
pub mod tenants;
pub mod validate;

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use switchboard_policies::problems::{Location, Problem, locate};
use switchboard_policies::spec::RoutingSpec;

pub use self::fleet::{FleetConfig, PostgresConfig, RedisConfig};
pub use self::ledger::LedgerConfig;
pub use self::limits::{Limits, RetrySettings, UpstreamSettings};
pub use self::models::{
    DEFAULT_EMBEDDING_MODEL, DEFAULT_LOCAL_MODEL, EmbeddingModelConfig, LocalModelConfig,
    LocalServerConfig,
};
pub use self::policy_rules::PolicyRules;
pub use self::providers::{ModelConfig, ProviderConfig, ProviderKind};
pub use self::router::RouterConfig;
pub use self::tenants::{RateLimitConfig, TenantConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "limits::default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Models answered on the company's machines: by the in-process engine, a pool of servers,
    /// or both.
    #[serde(default)]
    pub local_models: Vec<LocalModelConfig>,
    /// Embedding models served in-process at `/v1/embeddings`.
    #[serde(default)]
    pub embedding_models: Vec<EmbeddingModelConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Scoring every chat request (complexity, domain); off when absent.
    #[serde(default)]
    pub router: Option<RouterConfig>,
    /// Where requests for the routing model (`auto`) go; off when absent.
    #[serde(default)]
    pub routing: Option<RoutingSpec>,
    /// The durable record of every request.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Replicas sharing their state in Redis; one gateway on its own when absent.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{path} has {} problem(s):\n{}", problems.len(), located(path, problems))]
    Invalid {
        path: String,
        problems: Vec<(Option<Location>, Problem)>,
    },
}

/// `file:line:column: path: message (hint: …)`, one per line.
fn located(file: &str, problems: &[(Option<Location>, Problem)]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|(location, problem)| match location {
            Some(at) => format!("  {file}:{at}: {problem}"),
            None => format!("  {file}: {problem}"),
        })
        .collect();
    lines.join("\n")
}

impl ConfigError {
    /// The problems of an invalid file, for tests and tools.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|(_, p)| p.to_string()).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_yaml(&text, &display)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        let mut problems = config.validate();
        if let Err(policy_problems) = config.policy_rules() {
            problems.extend(policy_problems);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            let problems = problems
                .into_iter()
                .map(|problem| (locate(text, &problem.path), problem))
                .collect();
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const VALID: &str = r#"
listen: 127.0.0.1:9000
limits: { max_body_bytes: 1000, request_timeout: 2.5 }
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    models:
      - name: gpt-4o-mini
        price: { input_per_mtok: 0.15, output_per_mtok: 0.6 }
        fallbacks: [claude-haiku]
  - name: anthropic
    kind: anthropic
    base_url: https://api.anthropic.com
    api_key_env: ANTHROPIC_API_KEY
    models:
      - name: claude-haiku
        upstream_name: claude-3-5-haiku-latest
        price: { input_per_mtok: 0.8, output_per_mtok: 4 }
tenants:
  - name: acme
    api_key_hashes: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    allowed_models: ["*"]
"#;

    #[test]
    fn a_valid_file_parses_with_defaults_filled_in() {
        let config = Config::from_yaml(VALID, "test").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.max_body_bytes, 1000);
        assert_eq!(config.limits.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.limits.max_in_flight, 1024);
        assert_eq!(config.upstream.retry.max_attempts, 3);
        assert_eq!(
            config.providers[1].models[0].upstream_name(),
            "claude-3-5-haiku-latest"
        );
        assert_eq!(config.providers[0].models[0].upstream_name(), "gpt-4o-mini");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        let text = VALID.replace("max_body_bytes", "max_body_byte");
        let err = Config::from_yaml(&text, "test").unwrap_err().to_string();
        assert!(err.contains("max_body_byte"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn every_cross_reference_problem_is_reported_at_once() {
        let text = VALID
            .replace(
                "fallbacks: [claude-haiku]",
                "fallbacks: [nope, gpt-4o-mini]",
            )
            .replace("allowed_models: [\"*\"]", "allowed_models: [ghost]")
            .replace("sha256:2c26", "sha256:zz26")
            .replace("https://api.anthropic.com", "ftp://x");
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
        let all = problems.join("\n");
        assert!(
            all.contains("fallback 'nope' is not a configured model"),
            "{all}"
        );
        assert!(all.contains("cannot fall back to itself"), "{all}");
        assert!(all.contains("'ghost' is not a configured model"), "{all}");
        assert!(all.contains("api_key_hashes"), "{all}");
        assert!(all.contains("scheme 'ftp'"), "{all}");
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn duplicate_models_and_key_hashes_are_rejected() {
        let text = VALID.replace("name: claude-haiku", "name: gpt-4o-mini").replace(
            "allowed_models: [\"*\"]",
            "allowed_models: [\"*\"]\n  - name: beta\n    api_key_hashes: [\"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]\n    allowed_models: []",
        );
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
        let all = problems.join("\n");
        assert!(
            all.contains("model name 'gpt-4o-mini' is used twice"),
            "{all}"
        );
        assert!(all.contains("is used twice"), "{all}");
        assert!(all.contains("key hash"), "{all}");
    }

    #[test]
    fn the_router_must_name_an_embedding_model_and_give_examples() {
        let text = format!(
            "{VALID}router:\n  embedding_model: ghost\n  domains:\n    payroll: []\n    \"bad name\": [x]\n"
        );
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
        let all = problems.join("\n");
        assert!(
            all.contains("'ghost' is not one of embedding_models"),
            "{all}"
        );
        assert!(
            all.contains("router.domains.payroll: give at least one example"),
            "{all}"
        );
        assert!(all.contains("'bad name' is not a domain name"), "{all}");
        assert_eq!(problems.len(), 3, "{all}");
    }

    #[test]
    fn routing_problems_are_reported_at_their_line_and_column() {
        let text = format!(
            "{VALID}local_models:\n  - {{ name: slm, path: /models/slm.gguf }}\nrouting:\n  reference_model: gpt-4o-mini\n  tiers:\n    - {{ name: local, below: 0.4, targets: [slm] }}\n    - {{ name: remote, targets: [gpt-4o-mini, claude-hiaku] }}\n"
        );
        let error = Config::from_yaml(&text, "policy.yaml")
            .unwrap_err()
            .to_string();
        let line = text
            .lines()
            .position(|l| l.contains("claude-hiaku"))
            .unwrap()
            + 1;
        let column = text
            .lines()
            .nth(line - 1)
            .unwrap()
            .find("claude-hiaku")
            .unwrap()
            + 1;
        assert!(
            error.contains(&format!(
                "policy.yaml:{line}:{column}: routing.tiers[1].targets[1]: 'claude-hiaku' is not a configured model (hint: configured models: claude-haiku, gpt-4o-mini, slm)"
            )),
            "{error}"
        );

        let budget = text.replace("claude-hiaku", "claude-haiku").replace(
            "allowed_models: [\"*\"]",
            "allowed_models: [\"*\"]\n    budget: { monthly_usd: 10 }",
        );
        assert!(Config::from_yaml(&budget, "policy.yaml").is_ok());
        let without_routing = budget.split("routing:").next().unwrap();
        let problems = Config::from_yaml(without_routing, "p")
            .unwrap_err()
            .problems();
        assert_eq!(
            problems,
            [
                "tenants[0].budget: a budget needs a `routing:` section (hint: routing names the local tier that a spent budget falls back to)"
            ]
        );
    }

    #[test]
    fn fleet_problems_are_reported_at_their_keys() {
        let text = format!(
            "{VALID}fleet:\n  replicas: 0\n  hold_ttl: 1\n  redis: {{ url_env: \"A=B\", key_prefix: \"\", timeout: 0 }}\n  postgres: {{ batch_rows: 0, reconcile_every: 0 }}\n"
        )
        .replace("request_timeout: 2.5", "request_timeout: 5");
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
        let all = problems.join("\n");
        for expected in [
            "fleet.replicas: must be at least 1",
            "fleet.hold_ttl: must be longer than limits.request_timeout (5 s)",
            "fleet.redis.url_env: must be the NAME of an environment variable",
            "fleet.redis.key_prefix: must be non-empty, without spaces",
            "fleet.redis.timeout: must be above 0",
            "fleet.postgres.batch_rows: must be above 0",
            "fleet.postgres.reconcile_every: must be above 0",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
        assert_eq!(problems.len(), 7, "{all}");

        let fine = format!("{VALID}fleet:\n  replicas: 3\n  redis: {{}}\n  postgres: {{}}\n");
        let config = Config::from_yaml(&fine, "test").unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.redis.url_env, "SWITCHBOARD_REDIS_URL");
        assert_eq!(
            fleet.hold_ttl(config.limits.request_timeout),
            Duration::from_millis(62_500)
        );
    }

    #[test]
    fn local_pool_problems_are_reported_at_their_keys() {
        let text = format!(
            "{VALID}local_models:\n  - name: pool\n    health_every: 0\n    servers:\n      - {{ url: 'ftp://user:secret@node/v1', max_in_flight: 0, api_key_env: 'K=V' }}\n      - {{ url: 'http://node:80/v1' }}\n      - {{ url: 'http://node/other/v1' }}\n  - name: nothing\n"
        );
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
        let all = problems.join("\n");
        for expected in [
            "local_models[0].max_context: give the servers' context window",
            "local_models[0].health_every: must be above 0",
            "local_models[0].servers[0].url: must be an http(s) URL",
            "local_models[0].servers[2].url: node:80 is listed twice",
            "local_models[0].servers[0].max_in_flight: must be above 0",
            "local_models[0].servers[0].api_key_env: must be the NAME of an environment variable",
            "local_models[1]: give exactly one of default_model and path, or servers",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
        assert_eq!(problems.len(), 7, "{all}");
        assert!(!all.contains("secret"), "{all}");

        let fine = format!(
            "{VALID}local_models:\n  - name: pool\n    max_context: 4096\n    servers:\n      - {{ url: 'http://10.0.0.7:8080/v1' }}\n"
        );
        let config = Config::from_yaml(&fine, "test").unwrap();
        let pool = &config.local_models[0];
        assert!(!pool.runs_in_process());
        assert_eq!(pool.health_every, Duration::from_secs(5));
        assert_eq!(pool.servers[0].max_in_flight, 8);
    }

    /// The shipped policy file, cut, with lines dropped or duplicated, or with characters
    /// replaced: loading it gives a config or problems (each located in the text), never a
    /// panic.
    #[test]
    fn damaged_policy_files_load_or_report_problems() {
        use proptest::prelude::*;
        let shipped = include_str!("../../../policies/default.yaml");
        let lines: Vec<&str> = shipped.lines().collect();
        let cut = (0..shipped.len()).prop_map(|at| {
            let at = (0..=at)
                .rev()
                .find(|&i| shipped.is_char_boundary(i))
                .unwrap_or(0);
            shipped[..at].to_owned()
        });
        let n = lines.len();
        let edited = proptest::collection::vec((0..n, 0..3u8), 1..6).prop_map(move |edits| {
            let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for (at, how) in edits {
                let at = at % lines.len().max(1);
                match how {
                    0 if !lines.is_empty() => {
                        lines.remove(at);
                    }
                    1 if !lines.is_empty() => lines.insert(at, lines[at].clone()),
                    _ => lines.insert(at, "  - { name: [, price: -1 }".to_owned()),
                }
            }
            lines.join("\n")
        });
        let replaced = (
            0..shipped.len(),
            prop_oneof![
                Just(":"),
                Just("-"),
                Just(" "),
                Just("{"),
                Just("\t"),
                Just("0")
            ],
        )
            .prop_map(|(at, with)| {
                let at = (0..=at)
                    .rev()
                    .find(|&i| shipped.is_char_boundary(i))
                    .unwrap_or(0);
                let end = (at + 1..=shipped.len())
                    .find(|&i| shipped.is_char_boundary(i))
                    .unwrap_or(at);
                format!("{}{with}{}", &shipped[..at], &shipped[end..])
            });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 500,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&prop_oneof![cut, edited, replaced], |text| {
                let _ = Config::from_yaml(&text, "damaged.yaml");
                Ok(())
            })
            .unwrap();
    }
}
