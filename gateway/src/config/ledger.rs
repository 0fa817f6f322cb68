//! `ledger:`: where the durable record of every request lives and how often it reaches the disk.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the ledger lives and how often it reaches the disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// A directory; `$SWITCHBOARD_HOME/ledger` (else `~/.local/share/switchboard/ledger`)
    /// when absent.
    pub path: Option<PathBuf>,
    /// sled writes its log to disk at least this often: what a crash may lose of the records
    /// that no answer waited for.
    pub flush_every_ms: u64,
    /// An answer's last bytes wait until its record is on disk (a group commit), so that a
    /// crash loses no answered request. Off: more throughput on slow disks, and a crash may
    /// lose the last `flush_every_ms` of records.
    pub durable_answers: bool,
    /// Keep the text the router read of each request (prompt text), so that users' feedback
    /// can become training labels (`switchboard report --feedback-labels`). Off: the ledger
    /// holds no prompt text.
    pub keep_routing_text: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            path: None,
            flush_every_ms: 500,
            durable_answers: true,
            keep_routing_text: false,
        }
    }
}

impl LedgerConfig {
    /// The configured directory, else [`default_path`].
    pub fn path(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(default_path)
    }
}

/// `$SWITCHBOARD_HOME/ledger`, else `$XDG_DATA_HOME/switchboard/ledger`, else
/// `~/.local/share/switchboard/ledger`.
pub fn default_path() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SWITCHBOARD_HOME")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("switchboard")))
        .or_else(|| var("HOME").map(|d| d.join(".local").join("share").join("switchboard")))
        .unwrap_or_else(|| PathBuf::from(".switchboard"))
        .join("ledger")
}
