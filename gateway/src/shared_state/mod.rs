//! What the replicas of a fleet must share, behind one interface with two stores: each
//! tenant's standing (spend in the budget windows, the estimates its running requests hold,
//! the escalation count), its rate limit, and the tier its escalated conversations stay on.
//! [`Embedded`] keeps it in this process (one gateway, the default); [`Fleet`] keeps it in
//! Redis, for several replicas behind a load balancer (`fleet:` in the policy file).
//!
//! The contract both keep (one conformance suite, `tests/shared_state.rs`, runs on both):
//! - [`SharedState::standing`] reads a tenant's state: settled spend plus held estimates.
//! - [`SharedState::reserve`] holds a request's estimate and counts a routed request toward the
//!   escalation share, all or nothing, only if the [`Outlook`] that its decision saw still
//!   holds (which budget window is spent, whether one more escalation fits); otherwise nothing
//!   changes and the fresh state comes back, to be decided on again. The decision reads the
//!   state only through its outlook, so a decision that reserved is one the current state
//!   would also have made: a budget is overspent by at most the estimates held when it ran out.
//! - a [`Reservation`] settles once ([`Reservation::settle`]: the hold is replaced by the
//!   actual cost; a repeated settle counts nothing more); dropped unsettled, it releases its
//!   hold; a replica that dies leaves holds that lapse after `fleet.hold_ttl`.
//! - [`SharedState::admit`] is a token bucket of a minute's requests, refilled continuously.
//! - a conversation's tier is kept for its time to live.
//!
//! Money is counted in integer nano-dollars in both stores.

mod embedded;
mod fleet;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use switchboard_policies::decision::TenantState;
use switchboard_policies::tenant::Outlook;
use switchboard_policies::{TenantRules, Usd};

pub use embedded::Embedded;
pub use fleet::{Fleet, FleetError};

use crate::auth::Tenant;
use crate::conversations::ConversationKey;

/// Where the shared state lives.
pub enum SharedState {
    Embedded(Embedded),
    Fleet(Fleet),
}

/// The store cannot answer now (Redis unreachable or too slow). Budgets fail closed on it
/// (503 + `Retry-After`); rate limits fall back to this replica's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared state store is unreachable")]
pub struct Unreachable;

/// What a request asks to hold against its tenant's budget, decided on a state whose outlook
/// was `outlook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub outlook: Outlook,
    pub estimate: Usd,
    /// Whether the policy routed the request (`Some(escalated)`), for the escalation share.
    pub routed: Option<bool>,
}

/// What [`SharedState::reserve`] did.
pub enum Reserved {
    Held(Reservation),
    /// The outlook changed since the state was read: nothing was held; decide again on this.
    Changed(TenantState),
}

impl SharedState {
    /// A tenant's state in the windows that contain `today` (a UTC day number).
    pub async fn standing(&self, tenant: &str, today: u64) -> Result<TenantState, Unreachable> {
        match self {
            SharedState::Embedded(store) => Ok(store.standing(tenant, today)),
            SharedState::Fleet(store) => store.standing(tenant, today).await,
        }
    }

    /// A state of the tenant to decide on before reserving: the fleet store answers from the
    /// last state Redis told it of today, without a call, when it has one. A stale guess costs
    /// nothing but a second decision: the reservation checks that its outlook still holds.
    pub async fn guess_standing(
        &self,
        tenant: &str,
        today: u64,
    ) -> Result<TenantState, Unreachable> {
        match self {
            SharedState::Embedded(store) => Ok(store.standing(tenant, today)),
            SharedState::Fleet(store) => match store.last_seen(tenant, today) {
                Some(state) => Ok(state),
                None => store.standing(tenant, today).await,
            },
        }
    }

    /// Holds `hold` against `tenant`'s budget if its outlook still holds under `rules`.
    pub async fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        today: u64,
        rules: &TenantRules,
        hold: Hold,
    ) -> Result<Reserved, Unreachable> {
        // Even a decision that holds and counts nothing (a refusal, a free named model) is
        // checked: it may have been made on a guess (`guess_standing`) that is out of date.
        let id = match self.as_ref() {
            SharedState::Embedded(store) => {
                if let Err(state) = store.reserve(tenant, today, rules, hold) {
                    return Ok(Reserved::Changed(state));
                }
                HoldId::new()
            }
            SharedState::Fleet(store) => {
                let id = HoldId::new();
                if let Err(state) = store.reserve(tenant, today, rules, hold, &id).await? {
                    return Ok(Reserved::Changed(state));
                }
                id
            }
        };
        Ok(Reserved::Held(Reservation {
            store: self.clone(),
            tenant: tenant.to_owned(),
            day: today,
            id,
            amount: hold.estimate,
            routed: hold.routed,
            settled: false,
        }))
    }

    /// Lets one request of `tenant` in under its rate limit, or says how long until one is.
    pub async fn admit(&self, tenant: &Tenant) -> Result<(), Duration> {
        match self {
            SharedState::Embedded(_) => tenant.admit_locally(),
            SharedState::Fleet(store) => store.admit(tenant).await,
        }
    }

    /// The tier this conversation escalated to, within its time to live. A fleet store that
    /// cannot be reached forgets (the conversation is routed afresh).
    pub async fn sticky_tier(&self, key: ConversationKey) -> Option<String> {
        match self {
            SharedState::Embedded(store) => store.sticky_tier(key),
            SharedState::Fleet(store) => store.sticky_tier(key).await,
        }
    }

    /// Keeps the conversation on `tier` for `ttl`.
    pub async fn stick(&self, key: ConversationKey, tier: &str, ttl: Duration) {
        match self {
            SharedState::Embedded(store) => store.stick(key, tier, ttl),
            SharedState::Fleet(store) => store.stick(key, tier, ttl).await,
        }
    }

    /// Adds a request from the ledger to its tenant's totals, at start (records of past
    /// windows are ignored). A fleet store seeds each window once, from whichever replica
    /// starts first, and never adds to a window that Redis already counts.
    pub async fn restore(&self, tenant_totals: &[(String, Restored)], today: u64) {
        match self {
            SharedState::Embedded(store) => {
                for (tenant, restored) in tenant_totals {
                    store.restore(tenant, restored, today);
                }
            }
            SharedState::Fleet(store) => store.seed(tenant_totals, today).await,
        }
    }

    /// Returns once every settle handed to the store has reached it (or given up): before a
    /// clean shutdown, and in tests.
    pub async fn settled(&self) {
        if let SharedState::Fleet(store) = self {
            store.settled().await;
        }
    }
}

/// A tenant's totals in the current windows, summed from the ledger at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub today: Usd,
    pub this_month: Usd,
    pub routed: u64,
    pub escalated: u64,
}

/// Names one reservation in the store: random, so that client-chosen request ids never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldId(String);

impl HoldId {
    fn new() -> Self {
        Self(format!("h{:032x}", fastrand::u128(..)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An estimate held against a tenant's budget while its request runs; released when the
/// request settles (its actual cost then counts) or is dropped.
pub struct Reservation {
    store: Arc<SharedState>,
    tenant: String,
    /// The day it was decided on, whose escalation count it joined.
    day: u64,
    id: HoldId,
    amount: Usd,
    routed: Option<bool>,
    settled: bool,
}

impl Reservation {
    /// Replaces the estimate by the actual cost, counted in the windows of `unix_seconds`.
    pub fn settle(mut self, cost: Usd, unix_seconds: u64) {
        self.settled = true;
        if self.amount == Usd::ZERO && cost == Usd::ZERO {
            return;
        }
        let day = switchboard_policies::tenant::calendar::day(unix_seconds);
        match self.store.as_ref() {
            SharedState::Embedded(store) => store.settle(&self.tenant, self.amount, cost, day),
            SharedState::Fleet(store) => store.settle(&self.tenant, &self.id, cost, day),
        }
    }

    /// Whether the decision routed the request, and sent it remote.
    pub fn routed(&self) -> Option<bool> {
        self.routed
    }

    /// A routed request answered locally escalated after all (the confidence cascade).
    pub fn escalate(&mut self) {
        if self.routed != Some(false) {
            return;
        }
        self.routed = Some(true);
        match self.store.as_ref() {
            SharedState::Embedded(store) => store.escalate(&self.tenant, self.day),
            SharedState::Fleet(store) => store.escalate(&self.tenant, self.day),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled || self.amount == Usd::ZERO {
            return;
        }
        match self.store.as_ref() {
            SharedState::Embedded(store) => store.release(&self.tenant, self.amount),
            SharedState::Fleet(store) => store.settle(&self.tenant, &self.id, Usd::ZERO, self.day),
        }
    }
}
