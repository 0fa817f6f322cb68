//! The reconciler: Redis's settled spend checked against the fleet's ledger, which is the
//! record of truth. Every replica runs it; one at a time does the work (an advisory lock in
//! PostgreSQL). Where Redis counts less than the ledger (it lost data: a restart without
//! persistence, a flush), its spend is raised to the ledger's, so that budgets hold again;
//! where it counts more, that is the records still on their way to the ledger, and it is left.
//! The difference is a metric per tenant.

use std::time::Duration;

use switchboard_policies::tenant::calendar;

use super::{SharedState, Unreachable};
use crate::ledger::postgres::{FleetTable, TableError};
use crate::metrics::Metrics;

/// Reconciles every `every`, until the process ends.
pub async fn run(
    shared: std::sync::Arc<SharedState>,
    table: std::sync::Arc<crate::ledger::postgres::FleetTable>,
    every: Duration,
    metrics: std::sync::Arc<Metrics>,
) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = once(&shared, &table, &metrics).await {
            tracing::warn!(%error, "the reconciler could not compare Redis with the fleet's ledger");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Redis(#[from] Unreachable),
}

/// Compares (and corrects) every tenant of this month once; returns how many tenants it
/// raised, or `None` when another replica was reconciling.
pub async fn once(
    shared: &SharedState,
    table: &FleetTable,
    metrics: &Metrics,
) -> Result<Option<usize>, ReconcileError> {
    let SharedState::Fleet(fleet) = shared else {
        return Ok(Some(0));
    };
    let today = calendar::day(crate::api::unix_now());
    let first = calendar::first_of_month(today);
    let month_ms = calendar::start_ms(first);
    let Some(totals) = table
        .totals_if_alone(month_ms, calendar::start_ms(today))
        .await?
    else {
        return Ok(None);
    };
    let mut raised = 0;
    for (tenant, ledger) in &totals {
        let (redis_today, redis_month) = fleet.raise_spend(tenant, today, ledger).await?;
        let drift = redis_month - ledger.this_month;
        metrics.reconciled(tenant, drift);
        if redis_today < ledger.today || redis_month < ledger.this_month {
            raised += 1;
            tracing::warn!(
                tenant = %tenant,
                redis_usd = redis_month.as_dollars(),
                ledger_usd = ledger.this_month.as_dollars(),
                "Redis counted less spend than the fleet's ledger (it lost data): raised to the ledger's"
            );
        }
    }
    Ok(Some(raised))
}
