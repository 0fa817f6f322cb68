//! A fleet's ledger on a real PostgreSQL: replicas ship their records to one table, exactly
//! once, through an outbox that holds them while PostgreSQL is down.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fake_upstream::FakeUpstream;
use support::postgres_server::PostgresServer;
use support::redis_server::RedisServer;
use support::*;
use switchboard_gateway::ledger::postgres::FleetTable;
use switchboard_gateway::ledger::{Entry, Ledger};
use switchboard_gateway::shared_state::reconcile;
use switchboard_policies::Usd;
use switchboard_policies::tenant::calendar;

/// How long PostgreSQL stays down under load in the outage test.
const OUTAGE: Duration = Duration::from_secs(30);

fn replica_config(
    openai: &FakeUpstream,
    anthropic: &FakeUpstream,
    prefix: &str,
    ledger: &std::path::Path,
) -> String {
    let fleet = format!(
        "fleet:\n  replicas: 2\n  redis: {{ key_prefix: {prefix} }}\n  postgres: {{ flush_every_ms: 50, batch_rows: 100, timeout: 2 }}\n"
    );
    config_in(openai, anthropic, &fleet, ledger)
}

struct Stack {
    redis: RedisServer,
    postgres: PostgresServer,
    openai: FakeUpstream,
    anthropic: FakeUpstream,
    prefix: String,
}

impl Stack {
    async fn start() -> Self {
        Self {
            redis: RedisServer::start(),
            postgres: PostgresServer::start(),
            openai: FakeUpstream::start_with_key(UPSTREAM_KEY).await,
            anthropic: FakeUpstream::start_with_key(UPSTREAM_KEY).await,
            prefix: format!("ledger{:08x}", fastrand::u32(..)),
        }
    }

    async fn replica(&self, ledger: &std::path::Path) -> TestGateway {
        self.replica_on(ledger, &self.prefix).await
    }

    /// A replica whose Redis keys are under `prefix`.
    async fn replica_on(&self, ledger: &std::path::Path, prefix: &str) -> TestGateway {
        let config = replica_config(&self.openai, &self.anthropic, prefix, ledger);
        let env = [
            ("SWITCHBOARD_REDIS_URL", self.redis.url()),
            ("SWITCHBOARD_POSTGRES_URL", self.postgres.url()),
        ];
        TestGateway::start_with_env(&config, &env).await
    }

    fn table(&self) -> FleetTable {
        FleetTable::new(self.postgres.url(), Duration::from_secs(5))
    }
}

/// Sends `count` requests to `replica`, concurrently; returns the ids of those answered.
async fn load(replica: &TestGateway, count: usize) -> Vec<String> {
    let requests = (0..count).map(|_| async {
        let response = replica
            .chat(ACME_KEY, &hello("gpt-test"))
            .send()
            .await
            .unwrap();
        (response.status() == 200).then(|| {
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        })
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Waits until the table holds `count` records.
async fn table_holds(table: &FleetTable, count: usize) -> Vec<Entry> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = table.since(0, None).await.unwrap_or_default();
        if entries.len() >= count {
            return entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} records arrived",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn local_records(ledger: &Ledger) -> Vec<Entry> {
    ledger.since(0).map(Result::unwrap).collect()
}

/// Two replicas' records arrive in the one table, each once, the same as in their ledgers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_ship_every_record_once() {
    let stack = Stack::start().await;
    let a = stack.replica(&fresh_ledger_dir()).await;
    let b = stack.replica(&fresh_ledger_dir()).await;
    let mut answered = load(&a, 40).await;
    answered.extend(load(&b, 40).await);
    assert_eq!(answered.len(), 80);

    let shipped = table_holds(&stack.table(), 80).await;
    let mut local = local_records(&a.gateway.ledger);
    local.extend(local_records(&b.gateway.ledger));
    let key = |e: &Entry| (e.request_id.clone(), e.at_ms);
    let mut shipped_keys: Vec<_> = shipped.iter().map(key).collect();
    let mut local_keys: Vec<_> = local.iter().map(key).collect();
    shipped_keys.sort();
    local_keys.sort();
    assert_eq!(
        shipped_keys, local_keys,
        "the table holds what the ledgers hold, once"
    );
    let by_id: HashMap<_, _> = shipped.iter().map(|e| (e.request_id.clone(), e)).collect();
    for entry in &local {
        assert_eq!(by_id[&entry.request_id], entry, "shipped as written");
    }
    assert_eq!(a.gateway.ledger.unshipped_count(), 0);
    assert_eq!(b.gateway.ledger.unshipped_count(), 0);
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("switchboard_ledger_outbox_records 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_ledger_shipped_records_total 40"),
        "{metrics}"
    );

    // A verdict on a request of replica a, given through replica b, counts in the fleet's
    // reports; one on a request nobody answered is refused.
    let verdict = |id: &str| {
        b.http
            .post(b.url("/v1/feedback"))
            .bearer_auth(ACME_KEY)
            .json(&serde_json::json!({"request_id": id, "score": 1}))
            .send()
    };
    assert_eq!(verdict(&answered[0]).await.unwrap().status(), 200);
    assert_eq!(verdict("nobody-answered-this").await.unwrap().status(), 404);

    // Usage is the fleet's: either replica reports both replicas' requests.
    let usage = a.get_json("/v1/usage?since=1h", ACME_KEY).await;
    assert_eq!(usage["total"]["requests"], 80, "{usage}");
    assert_eq!(usage["total"]["feedback"], 1, "{usage}");

    // A replica that starts on an empty Redis keyspace restores the spend from the table.
    let spent = shipped.iter().fold(Usd::ZERO, |sum, e| sum + e.cost);
    assert!(spent > Usd::ZERO);
    let fresh = stack.replica_on(&fresh_ledger_dir(), "restored").await;
    let today = calendar::day(switchboard_gateway::api::unix_now());
    let state = fresh.gateway.shared.standing("acme", today).await.unwrap();
    assert_eq!(state.spend.this_month, spent);
}

/// PostgreSQL stops for half a minute under load, then starts: requests are answered all
/// along, their records wait in the outbox, and every one arrives exactly once. A batch shipped
/// again (its acknowledgement lost) adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_loses_and_duplicates_nothing() {
    let mut stack = Stack::start().await;
    let replica = stack.replica(&fresh_ledger_dir()).await;
    let mut answered = load(&replica, 20).await;
    table_holds(&stack.table(), 20).await;

    stack.postgres.stop();
    let started = std::time::Instant::now();
    while started.elapsed() < OUTAGE {
        answered.extend(load(&replica, 10).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        replica.gateway.ledger.unshipped_count() > 0,
        "the outbox holds them"
    );
    let metrics = replica.metrics().await;
    assert!(
        !metrics.contains("switchboard_ledger_ship_errors_total 0"),
        "{metrics}"
    );

    stack.postgres.restart();
    let shipped = table_holds(&stack.table(), answered.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shipped_again = stack.table().since(0, None).await.unwrap();
    assert_eq!(shipped_again.len(), shipped.len(), "nothing arrives twice");
    let mut ids: Vec<_> = shipped.iter().map(|e| e.request_id.clone()).collect();
    ids.sort();
    answered.sort();
    assert_eq!(ids, answered, "every answered request, once");
    assert_eq!(replica.gateway.ledger.unshipped_count(), 0);

    // A batch shipped once more, as after a lost acknowledgement, adds nothing.
    let table = stack.table();
    let batch: Vec<_> = shipped
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, e)| (format!("again-{i}"), e.clone()))
        .collect();
    assert_eq!(table.insert(&batch).await.unwrap(), 2);
    assert_eq!(table.insert(&batch).await.unwrap(), 0);
}

/// A replica that stops with records in its outbox ships them when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_ships_what_its_outbox_kept() {
    let mut stack = Stack::start().await;
    let dir = fresh_ledger_dir();
    let mut replica = stack.replica(&dir).await;
    load(&replica, 5).await;
    table_holds(&stack.table(), 5).await;
    stack.postgres.stop();
    let answered = load(&replica, 15).await;
    assert_eq!(answered.len(), 15);
    replica.shutdown();
    replica.task.take().unwrap().await.unwrap();
    drop(replica);

    stack.postgres.restart();
    let restarted = stack.replica(&dir).await;
    let shipped = table_holds(&stack.table(), 20).await;
    assert_eq!(shipped.len(), 20);
    assert_eq!(restarted.gateway.ledger.unshipped_count(), 0);
}

/// Redis loses its data (a flush, a restart without persistence): the reconciler raises each
/// tenant's spend to the ledger's, so that budgets hold again; a second pass finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reconciler_restores_what_redis_lost() {
    let stack = Stack::start().await;
    let replica = stack.replica(&fresh_ledger_dir()).await;
    load(&replica, 10).await;
    let shipped = table_holds(&stack.table(), 10).await;
    replica.gateway.shared.settled().await;
    let spent = shipped.iter().fold(Usd::ZERO, |sum, e| sum + e.cost);
    let today = calendar::day(switchboard_gateway::api::unix_now());
    let shared = &replica.gateway.shared;
    assert_eq!(stack.redis.cli(&["FLUSHALL"]).as_deref(), Some("OK"));
    let state = shared.standing("acme", today).await.unwrap();
    assert_eq!(state.spend.this_month, Usd::ZERO);
    let table = &replica.gateway.fleet_ledger.as_ref().unwrap().table;
    let metrics = &replica.gateway.metrics;
    let raised = reconcile::once(shared, table, metrics).await.unwrap();
    assert_eq!(raised, Some(1));
    let state = shared.standing("acme", today).await.unwrap();
    assert_eq!(state.spend.this_month, spent);
    assert_eq!(state.spend.today, spent);
    let drift = format!(
        "switchboard_reconciler_drift_usd{{tenant=\"acme\"}} -{}",
        spent.as_dollars()
    );
    assert!(replica.metrics().await.contains(&drift), "{drift}");

    assert_eq!(
        reconcile::once(shared, table, metrics).await.unwrap(),
        Some(0)
    );
    assert!(
        replica
            .metrics()
            .await
            .contains("switchboard_reconciler_drift_usd{tenant=\"acme\"} 0")
    );
}
