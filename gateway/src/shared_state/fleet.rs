//! The shared state of a fleet, in Redis. Every change is one Lua script (`scripts/`, loaded
//! once and run by EVALSHA), atomic across replicas, that sets its keys' times to live itself.
//!
//! Keys, all of one tenant in one hash slot (`{tenant}`), under the configured prefix `p`:
//! - `p:{t}:day:<day>` (spent, routed, escalated) and `p:{t}:month:<year-month>` (spent):
//!   settled spend in nano-dollars and the escalation counts, expiring after their window;
//! - `p:{t}:holds` (hold id → lapse time) and `p:{t}:held` (hold id → amount, `total`): the
//!   estimates of running requests; a hold whose replica never settles it lapses;
//! - `p:{t}:settled:<hold>`: a settled hold, so that a retried settle counts once;
//! - `p:{t}:rate`: the rate limit's theoretical arrival time (GCRA);
//! - `p:{t}:seeded:<day>`: the day's and month's totals were seeded from the ledger (and the
//!   reconciler raises them to the ledger's when Redis lost data, `raise.lua`);
//! - `p:conversation:<key>`: the tier of an escalated conversation (its key covers its tenant).
//!
//! When Redis cannot be reached within `fleet.redis.timeout`: reads and reservations fail
//! ([`Unreachable`], which the planner answers with 503 for tenants with a budget or a cap),
//! rate limits admit this replica's share of the limit, sticky conversations are forgotten,
//! settles are retried in the background until the hold would have lapsed. The connection
//! manager reconnects by itself; a log line says when Redis is lost and when it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_policies::decision::TenantState;
use switchboard_policies::tenant::{EscalationCount, Spend, Window, calendar};
use switchboard_policies::{TenantRules, Usd};
use tokio::sync::Notify;

use super::{Hold, HoldId, Restored, Unreachable};
use crate::auth::Tenant;
use crate::config::FleetConfig;
use crate::conversations::ConversationKey;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;

/// Why the fleet store cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet mode needs a URL in the environment variable {0}")]
    MissingUrl(String),
    #[error("the Redis URL in {env} is not valid: {source}")]
    BadUrl {
        env: String,
        source: redis::RedisError,
    },
}

/// A day's keys outlive it by a day, a month's by a week: clocks of replicas differ a little.
const DAY_TTL_SECS: u64 = 2 * 86_400;
const MONTH_TTL_SECS: u64 = 38 * 86_400;

struct Scripts {
    standing: Script,
    reserve: Script,
    settle: Script,
    admit: Script,
    raise: Script,
}

impl Scripts {
    fn new() -> Self {
        let prelude = include_str!("scripts/prelude.lua");
        let with_prelude = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Self {
            standing: with_prelude(include_str!("scripts/standing.lua")),
            reserve: with_prelude(include_str!("scripts/reserve.lua")),
            settle: Script::new(include_str!("scripts/settle.lua")),
            admit: Script::new(include_str!("scripts/admit.lua")),
            raise: Script::new(include_str!("scripts/raise.lua")),
        }
    }
}

/// The keys of one tenant.
struct TenantKeys {
    /// `prefix:{tenant}`
    base: String,
}

impl TenantKeys {
    fn new(prefix: &str, tenant: &str) -> Self {
        // Braces and colons in a name would move it to another slot or into another's keys.
        let mut escaped = String::with_capacity(tenant.len());
        for c in tenant.chars() {
            match c {
                '{' | '}' | ':' | '%' => escaped.push_str(&format!("%{:02X}", c as u32)),
                c => escaped.push(c),
            }
        }
        Self {
            base: format!("{prefix}:{{{escaped}}}"),
        }
    }

    fn day(&self, day: u64) -> String {
        format!("{}:day:{day}", self.base)
    }

    fn month(&self, day: u64) -> String {
        let (year, month) = calendar::month(day);
        format!("{}:month:{year}-{month:02}", self.base)
    }

    /// The four keys of the standing scripts' prelude, for `day`.
    fn standing(&self, day: u64) -> [String; 4] {
        [
            self.day(day),
            self.month(day),
            format!("{}:holds", self.base),
            format!("{}:held", self.base),
        ]
    }
}

pub struct Fleet {
    redis: ConnectionManager,
    prefix: String,
    scripts: Arc<Scripts>,
    timeout: Duration,
    hold_ttl: Duration,
    replicas: u32,
    /// The last state Redis replied for each tenant, and its day: the guess decisions start
    /// from.
    last_seen: Mutex<HashMap<String, (u64, TenantState)>>,
    /// Each tenant's share of its rate limit, for while Redis is unreachable.
    local_shares: Mutex<HashMap<String, (u32, RateLimiter)>>,
    /// Settles and escalations handed to the background, not yet done.
    settling: Arc<Settling>,
    reachable: Arc<AtomicBool>,
    /// When a call last tried an unreachable Redis (ms since `started`).
    last_probe_ms: AtomicU64,
    started: Instant,
    metrics: Arc<Metrics>,
}

/// While Redis is unreachable, how often a request tries it again.
const PROBE_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Settling {
    pending: AtomicUsize,
    done: Notify,
}

impl Fleet {
    /// Connects lazily to the Redis whose URL `env` gives: the gateway starts (and refuses
    /// budgeted requests) while Redis is down, and works as soon as it is up.
    pub fn new(
        config: &FleetConfig,
        request_timeout: Duration,
        env: impl Fn(&str) -> Option<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, FleetError> {
        let redis = &config.redis;
        let url = env(&redis.url_env)
            .filter(|url| !url.is_empty())
            .ok_or_else(|| FleetError::MissingUrl(redis.url_env.clone()))?;
        let bad_url = |source| FleetError::BadUrl {
            env: redis.url_env.clone(),
            source,
        };
        let client = redis::Client::open(url).map_err(bad_url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.timeout))
            .set_response_timeout(Some(redis.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection =
            ConnectionManager::new_lazy_with_config(client, manager).map_err(bad_url)?;
        metrics.state_store_reachable(true);
        Ok(Self {
            redis: connection,
            prefix: redis.key_prefix.clone(),
            scripts: Arc::new(Scripts::new()),
            timeout: redis.timeout,
            hold_ttl: config.hold_ttl(request_timeout),
            replicas: config.replicas.max(1),
            last_seen: Mutex::default(),
            local_shares: Mutex::default(),
            settling: Arc::default(),
            reachable: Arc::new(AtomicBool::new(true)),
            last_probe_ms: AtomicU64::new(0),
            started: Instant::now(),
            metrics,
        })
    }

    fn keys(&self, tenant: &str) -> TenantKeys {
        TenantKeys::new(&self.prefix, tenant)
    }

    /// Runs one call against Redis within the timeout, noting the outcome. While Redis is
    /// known to be unreachable, only one call per [`PROBE_EVERY`] tries it; the others fail
    /// at once, so that an outage does not add the timeout to every request.
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, Unreachable> {
        if !self.reachable.load(Ordering::Relaxed) {
            let now = self.started.elapsed().as_millis() as u64;
            let last = self.last_probe_ms.load(Ordering::Relaxed);
            let due = now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64;
            if !due
                || self
                    .last_probe_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Err(Unreachable);
            }
        }
        let mut connection = self.redis.clone();
        outcome(
            operation,
            self.timeout,
            &self.reachable,
            &self.metrics,
            call(&mut connection),
        )
        .await
    }

    pub(super) async fn standing(
        &self,
        tenant: &str,
        today: u64,
    ) -> Result<TenantState, Unreachable> {
        let keys = self.keys(tenant).standing(today);
        let reply: Vec<i64> = self
            .call("standing", async |redis| {
                let mut invocation = self.scripts.standing.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation.invoke_async(redis).await
            })
            .await?;
        let state = state_of(&reply);
        self.seen(tenant, today, state);
        Ok(state)
    }

    /// The last state Redis replied for `tenant` today, if any.
    pub(super) fn last_seen(&self, tenant: &str, today: u64) -> Option<TenantState> {
        let seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(tenant)
            .filter(|(day, _)| *day == today)
            .map(|(_, state)| *state)
    }

    fn seen(&self, tenant: &str, today: u64, state: TenantState) {
        let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(tenant) {
            Some(entry) => *entry = (today, state),
            None => {
                seen.insert(tenant.to_owned(), (today, state));
            }
        }
    }

    /// Holds `hold` under `id` if its outlook still holds; else the state now.
    pub(super) async fn reserve(
        &self,
        tenant: &str,
        today: u64,
        rules: &TenantRules,
        hold: Hold,
        id: &HoldId,
    ) -> Result<Result<(), TenantState>, Unreachable> {
        let keys = self.keys(tenant).standing(today);
        let limit = |usd: Option<Usd>| usd.map(|u| u.nanos().to_string()).unwrap_or_default();
        let budget = rules.budget;
        let spent = match hold.outlook.spent {
            None => "none",
            Some(Window::Day) => "day",
            Some(Window::Month) => "month",
        };
        let routed = match hold.routed {
            None => "none",
            Some(false) => "local",
            Some(true) => "remote",
        };
        let args = [
            id.as_str().to_owned(),
            hold.estimate.nanos().max(0).to_string(),
            self.hold_ttl.as_millis().to_string(),
            limit(budget.and_then(|b| b.daily)),
            limit(budget.and_then(|b| b.monthly)),
            // Rust's shortest representation reads back as the same double in Lua.
            rules
                .escalation_cap
                .map(|c| c.to_string())
                .unwrap_or_default(),
            spent.to_owned(),
            if hold.outlook.may_escalate { "1" } else { "0" }.to_owned(),
            routed.to_owned(),
            DAY_TTL_SECS.to_string(),
        ];
        let reply: Vec<i64> = self
            .call("reserve", async |redis| {
                let mut invocation = self.scripts.reserve.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                for arg in &args {
                    invocation.arg(arg);
                }
                invocation.invoke_async(redis).await
            })
            .await?;
        let before = state_of(&reply);
        Ok(match reply.first() {
            Some(1) => {
                // What this hold made of it, as the next decision's guess.
                let mut after = before;
                after.spend.today += hold.estimate;
                after.spend.this_month += hold.estimate;
                if let Some(escalated) = hold.routed {
                    after.escalations.routed += 1;
                    after.escalations.escalated += u64::from(escalated);
                }
                self.seen(tenant, today, after);
                Ok(())
            }
            _ => {
                self.seen(tenant, today, before);
                Err(before)
            }
        })
    }

    /// Replaces hold `id` by `cost`, counted in the windows of `day`, in the background:
    /// retried until the hold would have lapsed anyway.
    pub(super) fn settle(&self, tenant: &str, id: &HoldId, cost: Usd, day: u64) {
        let tenant_keys = self.keys(tenant);
        let [day_key, month_key, holds, held] = tenant_keys.standing(day);
        let marker = format!("{}:settled:{}", tenant_keys.base, id.as_str());
        let keys = [day_key, month_key, holds, held, marker];
        let args = [
            id.as_str().to_owned(),
            cost.nanos().max(0).to_string(),
            // A retried settle comes within the hold's time to live.
            self.hold_ttl.as_millis().to_string(),
            DAY_TTL_SECS.to_string(),
            MONTH_TTL_SECS.to_string(),
        ];
        let give_up_at = Instant::now() + self.hold_ttl;
        let scripts = self.scripts.clone();
        let mut redis = self.redis.clone();
        let (timeout, reachable, metrics) = self.outcome_parts();
        self.in_background(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let settled = outcome("settle", timeout, &reachable, &metrics, async {
                    let mut invocation = scripts.settle.prepare_invoke();
                    for key in &keys {
                        invocation.key(key);
                    }
                    for arg in &args {
                        invocation.arg(arg);
                    }
                    invocation.invoke_async::<i64>(&mut redis).await
                })
                .await;
                if settled.is_ok() {
                    return;
                }
                if Instant::now() + backoff >= give_up_at {
                    tracing::error!(
                        "a request's cost could not be settled in Redis before its hold lapsed; Redis's spend is short of the ledger's"
                    );
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// What [`outcome`] needs, owned, for a task in the background.
    fn outcome_parts(&self) -> (Duration, Arc<AtomicBool>, Arc<Metrics>) {
        (self.timeout, self.reachable.clone(), self.metrics.clone())
    }

    /// Runs `work` on the runtime, counted until it ends (see [`Fleet::settled`]). Without a
    /// runtime (the process is ending) it is dropped: holds then lapse.
    fn in_background(&self, work: impl Future<Output = ()> + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let settling = self.settling.clone();
        settling.pending.fetch_add(1, Ordering::SeqCst);
        runtime.spawn(async move {
            work.await;
            if settling.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                settling.done.notify_waiters();
            }
        });
    }

    /// Counts a routed request that escalated after its local answer, in the background.
    pub(super) fn escalate(&self, tenant: &str, day: u64) {
        let key = self.keys(tenant).day(day);
        let mut redis = self.redis.clone();
        let (timeout, reachable, metrics) = self.outcome_parts();
        self.in_background(async move {
            let _ = outcome("escalate", timeout, &reachable, &metrics, async {
                redis::pipe()
                    .atomic()
                    .hincr(&key, "escalated", 1)
                    .ignore()
                    .expire(&key, DAY_TTL_SECS as i64)
                    .ignore()
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await;
        });
    }

    /// Raises `tenant`'s settled spend today and this month, and today's routed and escalated
    /// counts, to `ledger`'s where Redis counts less (it lost data); never lowers them (records on their way to the ledger are counted in
    /// Redis first). Returns what Redis had: (today, this month).
    pub async fn raise_spend(
        &self,
        tenant: &str,
        today: u64,
        ledger: &Restored,
    ) -> Result<(Usd, Usd), Unreachable> {
        let keys = self.keys(tenant);
        let (day, month) = (keys.day(today), keys.month(today));
        let reply: Vec<i64> = self
            .call("raise", async |redis| {
                self.scripts
                    .raise
                    .key(&day)
                    .key(&month)
                    .arg(ledger.today.nanos())
                    .arg(ledger.this_month.nanos())
                    .arg(DAY_TTL_SECS)
                    .arg(MONTH_TTL_SECS)
                    .arg(ledger.routed)
                    .arg(ledger.escalated)
                    .invoke_async(redis)
                    .await
            })
            .await?;
        let at = |i: usize| Usd::from_nanos(reply.get(i).copied().unwrap_or(0));
        Ok((at(0), at(1)))
    }

    /// Admits one request of `tenant` under its limit shared by the fleet; while Redis is
    /// unreachable, under this replica's share of it.
    pub(super) async fn admit(&self, tenant: &Tenant) -> Result<(), Duration> {
        let Some(per_minute) = tenant.requests_per_minute() else {
            return Ok(());
        };
        let interval_us = 60_000_000 / u64::from(per_minute);
        let burst_us = interval_us * u64::from(per_minute);
        let key = format!("{}:rate", self.keys(&tenant.name).base);
        let wait = self
            .call("admit", async |redis| {
                self.scripts
                    .admit
                    .key(&key)
                    .arg(interval_us)
                    .arg(burst_us)
                    .invoke_async::<i64>(redis)
                    .await
            })
            .await;
        match wait {
            Ok(0) => Ok(()),
            Ok(wait_us) => Err(Duration::from_micros(wait_us.max(1) as u64)),
            Err(Unreachable) => {
                self.metrics.state_store_fallback("rate_limit_local_share");
                self.admit_locally(&tenant.name, per_minute)
            }
        }
    }

    /// This replica's share of a tenant's rate limit.
    fn admit_locally(&self, tenant: &str, per_minute: u32) -> Result<(), Duration> {
        let share = per_minute.div_ceil(self.replicas);
        let mut shares = self.local_shares.lock().unwrap_or_else(|e| e.into_inner());
        let (limit, limiter) = shares
            .entry(tenant.to_owned())
            .or_insert_with(|| (share, RateLimiter::new(share)));
        if *limit != share {
            *limit = share;
            *limiter = RateLimiter::new(share);
        }
        limiter.acquire(Instant::now())
    }

    pub(super) async fn sticky_tier(&self, key: ConversationKey) -> Option<String> {
        let key = self.conversation_key(key);
        let tier = self
            .call("sticky_tier", async |redis| {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(redis)
                    .await
            })
            .await;
        tier.unwrap_or_else(|Unreachable| {
            self.metrics.state_store_fallback("sticky_forgotten");
            None
        })
    }

    pub(super) async fn stick(&self, key: ConversationKey, tier: &str, ttl: Duration) {
        let key = self.conversation_key(key);
        let millis = ttl.as_millis().max(1) as u64;
        let _ = self
            .call("stick", async |redis| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(tier)
                    .arg("PX")
                    .arg(millis)
                    .query_async::<()>(redis)
                    .await
            })
            .await;
    }

    fn conversation_key(&self, key: ConversationKey) -> String {
        // The key's hash covers its tenant.
        format!("{}:conversation:{:016x}", self.prefix, key.as_u64())
    }

    /// Seeds the current windows of each tenant from the ledger, each once: the first
    /// replica to start sets them (`HSETNX` under a `seeded` marker taken with `SET NX`); the
    /// others, and later restarts, leave what Redis counts alone.
    pub(super) async fn seed(&self, tenant_totals: &[(String, Restored)], today: u64) {
        for (tenant, restored) in tenant_totals {
            let keys = self.keys(tenant);
            let marker = format!("{}:seeded:{today}", keys.base);
            let day = keys.day(today);
            let month = keys.month(today);
            let seeded = self
                .call("seed", async |redis| {
                    let first: bool = redis::cmd("SET")
                        .arg(&marker)
                        .arg(1)
                        .arg("NX")
                        .arg("EX")
                        .arg(DAY_TTL_SECS)
                        .query_async::<Option<String>>(redis)
                        .await?
                        .is_some();
                    if first {
                        redis::pipe()
                            .atomic()
                            .hset_nx(&day, "spent", restored.today.nanos())
                            .hset_nx(&day, "routed", restored.routed)
                            .hset_nx(&day, "escalated", restored.escalated)
                            .expire(&day, DAY_TTL_SECS as i64)
                            .hset_nx(&month, "spent", restored.this_month.nanos())
                            .expire(&month, MONTH_TTL_SECS as i64)
                            .query_async::<()>(redis)
                            .await?;
                    }
                    Ok(first)
                })
                .await;
            if seeded.is_err() {
                tracing::warn!(
                    "Redis is unreachable at start: the tenants' spend is not seeded from the ledger; the reconciler will"
                );
                return;
            }
        }
    }

    pub(super) async fn settled(&self) {
        loop {
            let done = self.settling.done.notified();
            if self.settling.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// Awaits `call` within `timeout`; counts its latency or its failure, and says in the log
/// when Redis is lost and when it is back.
async fn outcome<T>(
    operation: &'static str,
    timeout: Duration,
    reachable: &AtomicBool,
    metrics: &Metrics,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unreachable> {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, call).await;
    match result {
        Ok(Ok(value)) => {
            metrics.state_store_call(operation, started.elapsed());
            if !reachable.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis is reachable again: budgets and rate limits are shared");
                metrics.state_store_reachable(true);
            }
            Ok(value)
        }
        failed => {
            let error = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => format!("no answer within {} ms", timeout.as_millis()),
            };
            metrics.state_store_error(operation);
            if reachable.swap(false, Ordering::Relaxed) {
                tracing::error!(
                    %error,
                    "Redis is unreachable: requests of tenants with a budget or an escalation cap get 503, rate limits admit this replica's share"
                );
                metrics.state_store_reachable(false);
            }
            Err(Unreachable)
        }
    }
}

/// The state in a standing script's reply: {held, today, month, reserved, routed, escalated}.
fn state_of(reply: &[i64]) -> TenantState {
    let at = |i: usize| reply.get(i).copied().unwrap_or(0);
    let reserved = at(3);
    TenantState {
        spend: Spend {
            today: Usd::from_nanos(at(1) + reserved),
            this_month: Usd::from_nanos(at(2) + reserved),
        },
        escalations: EscalationCount {
            routed: at(4).max(0) as u64,
            escalated: at(5).max(0) as u64,
        },
    }
}
