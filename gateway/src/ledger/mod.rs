//! The ledger: one record per finished request, in sled, so that spend, budgets and reports
//! survive restarts. Keys are the time of the request (Unix milliseconds, big-endian) followed
//! by a sled-generated sequence number, so that a scan from a time reads records in order.
//!
//! Durability: a request's record is written when it settles, and its response's last bytes
//! leave only once [`Ledger::durable`] says the record is on disk, so that a crash never loses
//! an answered request (nor an acknowledged verdict); `durable_answers: false` trades that for
//! throughput (records then reach the disk within `flush_every_ms`). Concurrent requests share sled's flushes
//! (a group commit, `group_commit`: one fsync makes every record written before it durable). A
//! disk that refuses the flush is logged and does not hold answers back. Records of
//! requests whose client went away first reach the disk within `flush_every_ms`, and a clean
//! shutdown flushes all.

mod group_commit;
pub mod postgres;
pub mod shipping;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use switchboard_policies::Usd;

use crate::config::LedgerConfig;

/// What the ledger keeps of one request. Never the prompt or the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at_ms: u64,
    pub tenant: String,
    /// `local` or `remote`.
    pub route: String,
    pub model: String,
    pub domain: Option<String>,
    pub complexity: Option<f32>,
    /// The policy's reason, as printed, and its label.
    pub reason: Option<String>,
    pub reason_code: Option<String>,
    /// For requests the policy routed: whether it sent them remote.
    pub escalated: Option<bool>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The upstream reported no usage: the tokens are estimated from the text's bytes.
    #[serde(default)]
    pub usage_estimated: bool,
    pub cost: Usd,
    pub counterfactual: Usd,
    pub duration_ms: u64,
    pub first_token_ms: Option<u64>,
    /// The HTTP status (499: the client went away).
    pub status: u16,
    /// The text the router read (prompt text): only with `ledger.keep_routing_text`, so that
    /// feedback can become training labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_text: Option<String>,
}

/// A user's verdict on an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub request_id: String,
    pub tenant: String,
    pub at_ms: u64,
    /// From -1 (bad) to 1 (good).
    pub score: f64,
    pub comment: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the ledger at {0} is in use by another process (a running gateway holds it)")]
    Locked(PathBuf),
    #[error("ledger: {0}")]
    Storage(#[from] sled::Error),
    #[error("ledger record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedbackError {
    #[error("no request of yours has the id '{0}'")]
    UnknownRequest(String),
}

/// How long [`Ledger::open`] waits for another handle to let go of the ledger.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Ledger {
    /// `None` when answers do not wait for their records to reach the disk.
    commit: Option<group_commit::GroupCommit>,
    db: sled::Db,
    requests: sled::Tree,
    /// tenant and request id → key in `requests`. Request ids may come from clients, so they
    /// are only unique within a tenant.
    by_id: sled::Tree,
    /// tenant and request id → feedback.
    feedback: sled::Tree,
    /// In a fleet with a PostgreSQL ledger: the records not shipped yet.
    outbox: Option<Outbox>,
}

/// The keys (in `requests`) of records that wait to be shipped to the fleet's table, and this
/// replica's id, which makes their record ids unique across the fleet.
struct Outbox {
    keys: sled::Tree,
    replica: String,
    waiting: AtomicUsize,
}

/// A record that waits in the outbox.
pub struct Unshipped {
    /// Its key in the ledger (and the outbox).
    pub key: sled::IVec,
    /// Unique across the fleet: this replica's id and the key.
    pub record_id: String,
    pub entry: Entry,
}

impl Ledger {
    /// Opens the ledger that the policy file's `ledger:` section describes.
    pub fn from_config(config: &LedgerConfig) -> Result<Self, LedgerError> {
        Self::open(
            &config.path(),
            config.flush_every_ms,
            config.durable_answers,
        )
    }

    /// Opens (or creates) the ledger at `path`. A ledger another handle holds is waited for
    /// up to [`LOCK_WAIT`]: a gateway that restarts may find its predecessor's background
    /// threads still letting go of the file.
    pub fn open(
        path: &Path,
        flush_every_ms: u64,
        durable_answers: bool,
    ) -> Result<Self, LedgerError> {
        let started = std::time::Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(path)
                .flush_every_ms(Some(flush_every_ms.max(1)))
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(LedgerError::Locked(path.to_owned()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(LedgerError::Open {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        };
        let commit = if durable_answers {
            let flusher = db.clone();
            let commit = group_commit::GroupCommit::start(move || flusher.flush().map(drop))
                .map_err(sled::Error::Io)?;
            Some(commit)
        } else {
            None
        };
        Ok(Self {
            commit,
            requests: db.open_tree("requests")?,
            by_id: db.open_tree("by_id")?,
            feedback: db.open_tree("feedback")?,
            outbox: None,
            db,
        })
    }

    /// Keeps every record written from now on in an outbox until [`Ledger::mark_shipped`]
    /// (a fleet's replica, shipping to PostgreSQL). Records of the outbox from before a restart
    /// wait there still.
    pub fn with_outbox(mut self) -> Result<Self, LedgerError> {
        let keys = self.db.open_tree("outbox")?;
        let replica = match self.db.get("replica_id")? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = format!("{:016x}", fastrand::u64(..));
                self.db.insert("replica_id", id.as_bytes())?;
                id
            }
        };
        let waiting = AtomicUsize::new(keys.len());
        self.outbox = Some(Outbox {
            keys,
            replica,
            waiting,
        });
        Ok(self)
    }

    /// Appends a finished request.
    pub fn record(&self, entry: &Entry) -> Result<(), LedgerError> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&entry.at_ms.to_be_bytes());
        key[8..].copy_from_slice(&self.db.generate_id()?.to_be_bytes());
        let value = serde_json::to_vec(entry).expect("a ledger entry serializes");
        let id = scoped(&entry.tenant, &entry.request_id);
        let Some(outbox) = &self.outbox else {
            self.requests.insert(key, value)?;
            self.by_id.insert(id, &key)?;
            return Ok(());
        };
        // All three or none, so that no record is kept but never shipped.
        use sled::Transactional;
        (&self.requests, &self.by_id, &outbox.keys)
            .transaction(|(requests, by_id, keys)| {
                requests.insert(&key, value.as_slice())?;
                by_id.insert(id.as_slice(), &key)?;
                keys.insert(&key, &[])?;
                Ok(())
            })
            .map_err(
                |error: sled::transaction::TransactionError<()>| match error {
                    sled::transaction::TransactionError::Storage(error) => error,
                    sled::transaction::TransactionError::Abort(()) => {
                        sled::Error::Unsupported("the ledger's transaction aborted".to_owned())
                    }
                },
            )?;
        outbox.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `limit` records of the outbox, oldest first.
    pub fn unshipped(&self, limit: usize) -> Result<Vec<Unshipped>, LedgerError> {
        let Some(outbox) = &self.outbox else {
            return Ok(Vec::new());
        };
        let mut batch = Vec::new();
        for key in outbox.keys.iter().keys().take(limit) {
            let key = key?;
            let Some(value) = self.requests.get(&key)? else {
                continue;
            };
            let entry = serde_json::from_slice(&value).map_err(|source| LedgerError::Corrupt {
                key: hex::encode(&key),
                source,
            })?;
            let record_id = format!("{}-{}", outbox.replica, hex::encode(&key));
            batch.push(Unshipped {
                key,
                record_id,
                entry,
            });
        }
        Ok(batch)
    }

    /// Takes records that the fleet's table holds now out of the outbox.
    pub fn mark_shipped<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k sled::IVec>,
    ) -> Result<(), LedgerError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in keys {
            batch.remove(key);
            count += 1;
        }
        outbox.keys.apply_batch(batch)?;
        let _ = outbox
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(count))
            });
        Ok(())
    }

    /// Records that wait in the outbox.
    pub fn unshipped_count(&self) -> usize {
        self.outbox
            .as_ref()
            .map_or(0, |outbox| outbox.waiting.load(Ordering::Relaxed))
    }

    /// Every record from `since_ms` on, oldest first.
    pub fn since(&self, since_ms: u64) -> impl Iterator<Item = Result<Entry, LedgerError>> + '_ {
        self.requests.range(since_ms.to_be_bytes()..).map(|item| {
            let (key, value) = item?;
            serde_json::from_slice(&value).map_err(|source| LedgerError::Corrupt {
                key: hex::encode(&key),
                source,
            })
        })
    }

    /// Records a verdict on one of `tenant`'s requests (a later one replaces it).
    pub fn add_feedback(
        &self,
        feedback: &Feedback,
    ) -> Result<Result<(), FeedbackError>, LedgerError> {
        let id = scoped(&feedback.tenant, &feedback.request_id);
        // Another tenant's request is not found either.
        if !self.by_id.contains_key(&id)? {
            let unknown = FeedbackError::UnknownRequest(feedback.request_id.clone());
            return Ok(Err(unknown));
        }
        let value = serde_json::to_vec(feedback).expect("feedback serializes");
        self.feedback.insert(id, value)?;
        Ok(Ok(()))
    }

    /// Whether one of `tenant`'s requests has the id `request_id` here.
    pub fn knows(&self, tenant: &str, request_id: &str) -> Result<bool, LedgerError> {
        Ok(self.by_id.contains_key(scoped(tenant, request_id))?)
    }

    /// The verdict on one of `tenant`'s requests, if any.
    pub fn feedback_for(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<Feedback>, LedgerError> {
        let Some(value) = self.feedback.get(scoped(tenant, request_id))? else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|source| LedgerError::Corrupt {
                key: request_id.to_owned(),
                source,
            })
    }

    /// Resolves once everything written before the call is on disk. Callers that arrive
    /// while a flush runs share the next one, so that the fsyncs do not grow with the load.
    /// At once when answers do not wait for the disk.
    pub async fn durable(&self) {
        if let Some(commit) = &self.commit {
            commit.wait().await;
        }
    }

    /// Writes everything to disk now.
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush()?;
        Ok(())
    }
}

/// The key of a tenant's request id: the tenant's name, a NUL (which validation keeps out of
/// names), the id.
fn scoped(tenant: &str, request_id: &str) -> Vec<u8> {
    [tenant.as_bytes(), &[0], request_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn entry(id: &str, at_ms: u64, tenant: &str) -> Entry {
        Entry {
            request_id: id.to_owned(),
            at_ms,
            tenant: tenant.to_owned(),
            route: "local".to_owned(),
            model: "m".to_owned(),
            domain: None,
            complexity: None,
            reason: None,
            reason_code: None,
            escalated: None,
            prompt_tokens: 10,
            completion_tokens: 5,
            usage_estimated: false,
            cost: Usd::from_nanos(7),
            counterfactual: Usd::from_nanos(70),
            duration_ms: 12,
            first_token_ms: None,
            status: 200,
            routing_text: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_in_time_order_and_carry_feedback() {
        let dir = std::env::temp_dir().join(format!("switchboard-ledger-{}", fastrand::u64(..)));
        {
            let ledger = Ledger::open(&dir, 500, true).unwrap();
            ledger.record(&entry("b", 2_000, "acme")).unwrap();
            ledger.record(&entry("a", 1_000, "acme")).unwrap();
            ledger.record(&entry("c", 3_000, "globex")).unwrap();
            let feedback = |id: &str, tenant: &str| Feedback {
                request_id: id.to_owned(),
                tenant: tenant.to_owned(),
                at_ms: 4_000,
                score: 1.0,
                comment: None,
            };
            assert_eq!(ledger.add_feedback(&feedback("a", "acme")).unwrap(), Ok(()));
            let theirs = ledger.add_feedback(&feedback("c", "acme")).unwrap();
            assert_eq!(theirs, Err(FeedbackError::UnknownRequest("c".into())));
            let unknown = ledger.add_feedback(&feedback("zz", "acme")).unwrap();
            assert!(unknown.is_err());
            // A second handle on the same directory is refused while this one is open.
            assert!(matches!(
                Ledger::open(&dir, 500, true),
                Err(LedgerError::Locked(_))
            ));
        }
        let ledger = Ledger::open(&dir, 500, true).unwrap();
        let ids: Vec<String> = ledger.since(0).map(|e| e.unwrap().request_id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let later: Vec<String> = ledger.since(2_000).map(|e| e.unwrap().request_id).collect();
        assert_eq!(later, ["b", "c"]);
        assert_eq!(
            ledger.feedback_for("acme", "a").unwrap().unwrap().score,
            1.0
        );
        assert_eq!(ledger.feedback_for("acme", "b").unwrap(), None);
        assert_eq!(ledger.feedback_for("globex", "a").unwrap(), None);
        drop(ledger);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
