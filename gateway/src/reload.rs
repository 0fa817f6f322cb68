//! Reloading the policy file while serving: on SIGHUP, and when the file changes. A valid new
//! file replaces the tenants (keys, rate limits, budgets, caps) and the routing rules at once;
//! requests already running keep the policy they started with. An invalid file, or one that
//! changes what only a restart can apply (listen address, limits, providers and models, the
//! router, the ledger), is refused with its problems logged, and the old policy keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError};
use crate::state::Gateway;

/// How often `serve` looks at the policy file's modification time.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The sections a reload may not change.
pub const RESTART_SECTIONS: [&str; 8] = [
    "listen",
    "limits",
    "upstream",
    "providers",
    "local_models",
    "embedding_models",
    "router",
    "ledger",
];

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{} changed: restart the gateway to apply it (the policy in force is unchanged)", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
}

/// The parts of a file that a reload may not change, as YAML, for comparison.
pub fn restart_sections(text: &str) -> Vec<(&'static str, serde_yaml::Value)> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
    RESTART_SECTIONS
        .iter()
        .map(|&key| (key, document.get(key).cloned().unwrap_or_default()))
        .collect()
}

/// Reloads `path` when the process gets SIGHUP or when the file's modification time changes
/// (checked every `poll`), until the gateway shuts down. `started_with` is the text the
/// gateway was built from.
pub async fn watch(gateway: Arc<Gateway>, path: PathBuf, started_with: String, poll: Duration) {
    let baseline = restart_sections(&started_with);
    let mut hangups = hangup_signals();
    let mut seen = modified(&path);
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = ticks.tick() => false,
            Some(()) = next_hangup(&mut hangups) => true,
        };
        if gateway.is_shutting_down() {
            return;
        }
        let now = modified(&path);
        if !signalled && now == seen {
            continue;
        }
        seen = now;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read the policy file; the policy in force is unchanged");
                continue;
            }
        };
        match gateway.reload(&baseline, &text, &path.display().to_string()) {
            Ok(()) => tracing::info!(path = %path.display(), "policy reloaded"),
            Err(error) => tracing::error!("policy not reloaded: {error}"),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signals() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

impl Gateway {
    /// Replaces the tenants and the routing rules by those of `text`, if it is valid and
    /// changes none of the `baseline`'s restart sections (see [`restart_sections`]).
    pub fn reload(
        &self,
        baseline: &[(&'static str, serde_yaml::Value)],
        text: &str,
        origin: &str,
    ) -> Result<(), ReloadError> {
        let outcome = (|| {
            let config = Config::from_yaml(text, origin)?;
            let changed: Vec<&'static str> = restart_sections(text)
                .into_iter()
                .zip(baseline)
                .filter(|((_, new), (_, old))| new != old)
                .map(|((key, _), _)| key)
                .collect();
            if !changed.is_empty() {
                return Err(ReloadError::NeedsRestart(changed));
            }
            self.replace_policy(&config);
            Ok(())
        })();
        let result = match &outcome {
            Ok(()) => "applied",
            Err(ReloadError::Invalid(_)) => "invalid",
            Err(ReloadError::NeedsRestart(_)) => "needs_restart",
        };
        self.metrics.policy_reloaded(result);
        outcome
    }
}
