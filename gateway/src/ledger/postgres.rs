//! A fleet's ledger: one append-only table in PostgreSQL that every replica ships its records
//! to (and one of users' verdicts, written directly), keyed by a record id unique across the fleet (the replica's id and the record's sled
//! key), so that a batch shipped twice (its acknowledgement lost, the replica restarted)
//! inserts nothing the second time (`ON CONFLICT DO NOTHING`). The schema is created, and
//! migrated, at connection, under an advisory lock so that replicas starting together do not
//! race.

use std::time::Duration;

use switchboard_policies::Usd;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{Entry, Feedback};
use crate::shared_state::Restored;

/// The schema's versions, applied in order; each runs once, in a transaction.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE switchboard_requests (
    record_id text PRIMARY KEY,
    request_id text NOT NULL,
    at_ms bigint NOT NULL,
    at timestamptz GENERATED ALWAYS AS (to_timestamp(at_ms / 1000.0)) STORED,
    tenant text NOT NULL,
    route text NOT NULL,
    model text NOT NULL,
    domain text,
    complexity real,
    reason text,
    reason_code text,
    escalated boolean,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    usage_estimated boolean NOT NULL,
    cost_nanos bigint NOT NULL,
    counterfactual_nanos bigint NOT NULL,
    duration_ms bigint NOT NULL,
    first_token_ms bigint,
    status smallint NOT NULL,
    routing_text text
);
CREATE INDEX switchboard_requests_at ON switchboard_requests (at_ms);
CREATE INDEX switchboard_requests_tenant_at ON switchboard_requests (tenant, at_ms);
"#,
    r#"
CREATE TABLE switchboard_feedback (
    tenant text NOT NULL,
    request_id text NOT NULL,
    at_ms bigint NOT NULL,
    score double precision NOT NULL,
    comment text,
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX switchboard_requests_tenant_request ON switchboard_requests (tenant, request_id);
"#,
];

/// Taken while migrating, and while reconciling: 64-bit numbers that no other application of
/// the database uses.
const MIGRATION_LOCK: i64 = 0x5357_4954_4348_4244; // "SWITCHBD"
const RECONCILE_LOCK: i64 = 0x5357_4954_4348_5243; // "SWITCHRC"

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
}

/// The fleet's table, through one connection that is opened on first use and again after it
/// breaks.
pub struct FleetTable {
    url: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl FleetTable {
    pub fn new(url: String, timeout: Duration) -> Self {
        Self {
            url,
            timeout,
            client: Mutex::new(None),
        }
    }

    /// Inserts `records` (record id, entry) that are not in the table yet, in one statement;
    /// returns how many were new.
    pub async fn insert(&self, records: &[(String, Entry)]) -> Result<u64, TableError> {
        let rows = Columns::of(records);
        self.with_client(async |client| {
            let inserted = client
                .execute(
                    "INSERT INTO switchboard_requests (record_id, request_id, at_ms, tenant, route,
                        model, domain, complexity, reason, reason_code, escalated, prompt_tokens,
                        completion_tokens, usage_estimated, cost_nanos, counterfactual_nanos,
                        duration_ms, first_token_ms, status, routing_text)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[],
                        $5::text[], $6::text[], $7::text[], $8::real[], $9::text[], $10::text[],
                        $11::boolean[], $12::bigint[], $13::bigint[], $14::boolean[],
                        $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
                        $19::smallint[], $20::text[])
                     ON CONFLICT (record_id) DO NOTHING",
                    &[
                        &rows.record_id,
                        &rows.request_id,
                        &rows.at_ms,
                        &rows.tenant,
                        &rows.route,
                        &rows.model,
                        &rows.domain,
                        &rows.complexity,
                        &rows.reason,
                        &rows.reason_code,
                        &rows.escalated,
                        &rows.prompt_tokens,
                        &rows.completion_tokens,
                        &rows.usage_estimated,
                        &rows.cost_nanos,
                        &rows.counterfactual_nanos,
                        &rows.duration_ms,
                        &rows.first_token_ms,
                        &rows.status,
                        &rows.routing_text,
                    ],
                )
                .await?;
            Ok(inserted)
        })
        .await
    }

    /// Every record from `since_ms` on, of `tenant` or of all, oldest first.
    pub async fn since(
        &self,
        since_ms: u64,
        tenant: Option<&str>,
    ) -> Result<Vec<Entry>, TableError> {
        let scored = self.scored_since(since_ms, tenant).await?;
        Ok(scored.into_iter().map(|(entry, _)| entry).collect())
    }

    /// Every record from `since_ms` on, of `tenant` or of all, oldest first, each with the
    /// score of its user's verdict, if any.
    pub async fn scored_since(
        &self,
        since_ms: u64,
        tenant: Option<&str>,
    ) -> Result<Vec<(Entry, Option<f64>)>, TableError> {
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        self.with_client(async |client| {
            let rows = client
                .query(
                    "SELECT r.request_id, r.at_ms, r.tenant, route, model, domain, complexity,
                        reason, reason_code, escalated, prompt_tokens, completion_tokens,
                        usage_estimated, cost_nanos, counterfactual_nanos, duration_ms,
                        first_token_ms, status, routing_text, f.score
                     FROM switchboard_requests r
                     LEFT JOIN switchboard_feedback f
                        ON f.tenant = r.tenant AND f.request_id = r.request_id
                     WHERE r.at_ms >= $1 AND ($2::text IS NULL OR r.tenant = $2)
                     ORDER BY r.at_ms, r.record_id",
                    &[&since, &tenant],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| (entry_of(row), row.get("score")))
                .collect())
        })
        .await
    }

    /// Records a user's verdict on one of its tenant's requests (a later one replaces it), if
    /// the table holds that request or `known` says this replica answered it (its record may
    /// still wait in the outbox). Whether it was recorded.
    pub async fn add_feedback(&self, feedback: &Feedback, known: bool) -> Result<bool, TableError> {
        let at = i64::try_from(feedback.at_ms).unwrap_or(i64::MAX);
        self.with_client(async |client| {
            let written = client
                .execute(
                    "INSERT INTO switchboard_feedback (tenant, request_id, at_ms, score, comment)
                     SELECT $1, $2, $3, $4, $5
                     WHERE $6 OR EXISTS (SELECT 1 FROM switchboard_requests
                                         WHERE tenant = $1 AND request_id = $2)
                     ON CONFLICT (tenant, request_id) DO UPDATE
                        SET at_ms = EXCLUDED.at_ms, score = EXCLUDED.score,
                            comment = EXCLUDED.comment",
                    &[
                        &feedback.tenant,
                        &feedback.request_id,
                        &at,
                        &feedback.score,
                        &feedback.comment,
                        &known,
                    ],
                )
                .await?;
            Ok(written > 0)
        })
        .await
    }

    /// Each tenant's spend this month (records from `month_ms` on) and today (from
    /// `today_ms` on), and today's routed and escalated requests: summed by PostgreSQL, for the
    /// budgets' restore at start.
    pub async fn totals(
        &self,
        month_ms: u64,
        today_ms: u64,
    ) -> Result<Vec<(String, Restored)>, TableError> {
        let month = i64::try_from(month_ms).unwrap_or(i64::MAX);
        let today = i64::try_from(today_ms).unwrap_or(i64::MAX);
        self.with_client(async |client| {
            let rows = client
                .query(
                    "SELECT tenant,
                        coalesce(sum(cost_nanos) FILTER (WHERE at_ms >= $2), 0)::bigint,
                        coalesce(sum(cost_nanos), 0)::bigint,
                        count(*) FILTER (WHERE at_ms >= $2 AND escalated IS NOT NULL),
                        count(*) FILTER (WHERE at_ms >= $2 AND escalated)
                     FROM switchboard_requests WHERE at_ms >= $1 GROUP BY tenant",
                    &[&month, &today],
                )
                .await?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(rows
                .iter()
                .map(|row| {
                    let totals = Restored {
                        today: Usd::from_nanos(row.get(1)),
                        this_month: Usd::from_nanos(row.get(2)),
                        routed: count(row.get(3)),
                        escalated: count(row.get(4)),
                    };
                    (row.get(0), totals)
                })
                .collect())
        })
        .await
    }

    /// [`FleetTable::totals`], if no other replica is reconciling now (a transaction-scoped
    /// advisory lock, so that one replica at a time does the work); `None` if one is.
    pub async fn totals_if_alone(
        &self,
        month_ms: u64,
        today_ms: u64,
    ) -> Result<Option<Vec<(String, Restored)>>, TableError> {
        let took: bool = self
            .with_client(async |client| {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&RECONCILE_LOCK])
                    .await?;
                Ok(row.get(0))
            })
            .await?;
        if !took {
            return Ok(None);
        }
        let totals = self.totals(month_ms, today_ms).await;
        // Released whatever the sums did; a connection that broke released it already.
        let _ = self
            .with_client(async |client| {
                client
                    .execute("SELECT pg_advisory_unlock($1)", &[&RECONCILE_LOCK])
                    .await?;
                Ok(())
            })
            .await;
        totals.map(Some)
    }

    /// Runs `work` on the connection (opening it, and migrating, first if needed), within the
    /// timeout; a connection that failed is dropped, to be opened again next time.
    async fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, TableError>,
    ) -> Result<T, TableError> {
        let mut slot = self.client.lock().await;
        let attempt = async {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(self.connect().await?);
            }
            let client = slot.as_ref().expect("connected above");
            work(client).await
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TableError::Timeout(self.timeout)),
        };
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn connect(&self) -> Result<Client, TableError> {
        let (mut client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the connection to PostgreSQL ended");
            }
        });
        migrate(&mut client).await?;
        Ok(client)
    }
}

/// Brings the schema to the last version, once, whichever replica gets there first.
async fn migrate(client: &mut Client) -> Result<(), TableError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS switchboard_schema (version integer NOT NULL)")
        .await?;
    let applied: i64 = transaction
        .query_one("SELECT count(*) FROM switchboard_schema", &[])
        .await?
        .get(0);
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        transaction.batch_execute(migration).await?;
        transaction
            .execute(
                "INSERT INTO switchboard_schema (version) VALUES ($1)",
                &[&(version as i32 + 1)],
            )
            .await?;
        tracing::info!(version = version + 1, "fleet ledger schema migrated");
    }
    transaction.commit().await?;
    Ok(())
}

/// A batch of records as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    record_id: Vec<String>,
    request_id: Vec<String>,
    at_ms: Vec<i64>,
    tenant: Vec<String>,
    route: Vec<String>,
    model: Vec<String>,
    domain: Vec<Option<String>>,
    complexity: Vec<Option<f32>>,
    reason: Vec<Option<String>>,
    reason_code: Vec<Option<String>>,
    escalated: Vec<Option<bool>>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    usage_estimated: Vec<bool>,
    cost_nanos: Vec<i64>,
    counterfactual_nanos: Vec<i64>,
    duration_ms: Vec<i64>,
    first_token_ms: Vec<Option<i64>>,
    status: Vec<i16>,
    routing_text: Vec<Option<String>>,
}

impl Columns {
    fn of(records: &[(String, Entry)]) -> Self {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut rows = Self::default();
        for (record_id, entry) in records {
            rows.record_id.push(record_id.clone());
            rows.request_id.push(entry.request_id.clone());
            rows.at_ms.push(int(entry.at_ms));
            rows.tenant.push(entry.tenant.clone());
            rows.route.push(entry.route.clone());
            rows.model.push(entry.model.clone());
            rows.domain.push(entry.domain.clone());
            rows.complexity.push(entry.complexity);
            rows.reason.push(entry.reason.clone());
            rows.reason_code.push(entry.reason_code.clone());
            rows.escalated.push(entry.escalated);
            rows.prompt_tokens.push(int(entry.prompt_tokens));
            rows.completion_tokens.push(int(entry.completion_tokens));
            rows.usage_estimated.push(entry.usage_estimated);
            rows.cost_nanos.push(entry.cost.nanos());
            rows.counterfactual_nanos.push(entry.counterfactual.nanos());
            rows.duration_ms.push(int(entry.duration_ms));
            rows.first_token_ms.push(entry.first_token_ms.map(int));
            rows.status
                .push(i16::try_from(entry.status).unwrap_or(i16::MAX));
            rows.routing_text.push(entry.routing_text.clone());
        }
        rows
    }
}

fn entry_of(row: &tokio_postgres::Row) -> Entry {
    let uint = |n: i64| u64::try_from(n).unwrap_or(0);
    Entry {
        request_id: row.get("request_id"),
        at_ms: uint(row.get("at_ms")),
        tenant: row.get("tenant"),
        route: row.get("route"),
        model: row.get("model"),
        domain: row.get("domain"),
        complexity: row.get("complexity"),
        reason: row.get("reason"),
        reason_code: row.get("reason_code"),
        escalated: row.get("escalated"),
        prompt_tokens: uint(row.get("prompt_tokens")),
        completion_tokens: uint(row.get("completion_tokens")),
        usage_estimated: row.get("usage_estimated"),
        cost: Usd::from_nanos(row.get("cost_nanos")),
        counterfactual: Usd::from_nanos(row.get("counterfactual_nanos")),
        duration_ms: uint(row.get("duration_ms")),
        first_token_ms: row.get::<_, Option<i64>>("first_token_ms").map(uint),
        status: u16::try_from(row.get::<_, i16>("status")).unwrap_or(0),
        routing_text: row.get("routing_text"),
    }
}
