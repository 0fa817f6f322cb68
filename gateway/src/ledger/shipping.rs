//! Ships a replica's records from its sled ledger, which is the outbox (a record is durable
//! there before its answer's last byte leaves), to the fleet's table in PostgreSQL: a batch
//! whenever `batch_rows` records wait or `flush_every` has passed. A record leaves the outbox
//! only once PostgreSQL has it; a batch shipped again after a lost acknowledgement or a
//! restart inserts nothing twice. While PostgreSQL is down the outbox grows on disk, and
//! drains when it is back.

use std::sync::Arc;
use std::time::Duration;

use super::Ledger;
use super::postgres::FleetTable;
use crate::metrics::Metrics;

/// How a replica ships its records.
#[derive(Debug, Clone, Copy)]
pub struct Shipping {
    pub flush_every: Duration,
    pub batch_rows: usize,
}

/// The longest wait between two attempts while PostgreSQL is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Ships until the process ends.
pub async fn ship(
    ledger: Arc<Ledger>,
    table: Arc<FleetTable>,
    shipping: Shipping,
    metrics: Arc<Metrics>,
) {
    let mut backoff = shipping.flush_every;
    let mut failing = false;
    loop {
        match ship_once(&ledger, &table, shipping.batch_rows).await {
            Ok(shipped) => {
                metrics.ledger_shipped(shipped, ledger.unshipped_count());
                if failing {
                    tracing::info!("PostgreSQL is reachable again: the outbox drains");
                    failing = false;
                }
                backoff = shipping.flush_every;
                // A full batch: more may wait, ship on at once.
                if shipped < shipping.batch_rows {
                    tokio::time::sleep(shipping.flush_every).await;
                }
            }
            Err(error) => {
                metrics.ledger_ship_failed(ledger.unshipped_count());
                if !failing {
                    tracing::error!(
                        %error,
                        "cannot ship ledger records to PostgreSQL: they wait in the local outbox"
                    );
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Ships one batch; returns how many records it held.
pub async fn ship_once(
    ledger: &Ledger,
    table: &FleetTable,
    batch_rows: usize,
) -> Result<usize, ShipError> {
    let batch = ledger.unshipped(batch_rows)?;
    if batch.is_empty() {
        return Ok(0);
    }
    let records: Vec<_> = batch
        .iter()
        .map(|record| (record.record_id.clone(), record.entry.clone()))
        .collect();
    table.insert(&records).await?;
    ledger.mark_shipped(batch.iter().map(|record| &record.key))?;
    Ok(batch.len())
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Ledger(#[from] super::LedgerError),
    #[error(transparent)]
    Table(#[from] super::postgres::TableError),
}
