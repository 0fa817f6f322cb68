//! The shared state of one gateway, in this process: each tenant's totals under one lock, the
//! conversations' tiers in a map. The ledger fills the totals at start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard_policies::decision::TenantState;
use switchboard_policies::tenant::{EscalationCount, Spend, calendar};
use switchboard_policies::{TenantRules, Usd};

use super::{Hold, Restored};
use crate::conversations::{ConversationKey, Conversations};

/// One tenant's totals in the windows that contain `day`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    day: u64,
    today: Usd,
    this_month: Usd,
    reserved: Usd,
    escalations: EscalationCount,
}

impl Totals {
    /// Moves the windows forward to `day`, dropping what belongs to past ones.
    fn roll_to(&mut self, day: u64) {
        if day == self.day {
            return;
        }
        if calendar::month(day) != calendar::month(self.day) {
            self.this_month = Usd::ZERO;
        }
        self.today = Usd::ZERO;
        self.escalations = EscalationCount::default();
        self.day = day;
    }

    fn state(&self) -> TenantState {
        TenantState {
            spend: Spend {
                today: self.today + self.reserved,
                this_month: self.this_month + self.reserved,
            },
            escalations: self.escalations,
        }
    }
}

#[derive(Default)]
pub struct Embedded {
    tenants: Mutex<HashMap<String, Totals>>,
    conversations: Conversations,
}

impl Embedded {
    /// Runs `f` on a tenant's totals, their windows moved to `today`, under the lock.
    fn with_totals<R>(&self, tenant: &str, today: u64, f: impl FnOnce(&mut Totals) -> R) -> R {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let totals = tenants.entry(tenant.to_owned()).or_default();
        totals.roll_to(today);
        f(totals)
    }

    pub(super) fn standing(&self, tenant: &str, today: u64) -> TenantState {
        self.with_totals(tenant, today, |totals| totals.state())
    }

    /// Holds `hold` if its outlook still holds; else the state now.
    pub(super) fn reserve(
        &self,
        tenant: &str,
        today: u64,
        rules: &TenantRules,
        hold: Hold,
    ) -> Result<(), TenantState> {
        self.with_totals(tenant, today, |totals| {
            let state = totals.state();
            if rules.outlook(&state) != hold.outlook {
                return Err(state);
            }
            totals.reserved += hold.estimate;
            if let Some(escalated) = hold.routed {
                totals.escalations.routed += 1;
                totals.escalations.escalated += u64::from(escalated);
            }
            Ok(())
        })
    }

    /// Replaces a hold of `amount` by `cost`, counted in the windows of `day`.
    pub(super) fn settle(&self, tenant: &str, amount: Usd, cost: Usd, day: u64) {
        self.with_totals(tenant, day, |totals| {
            totals.reserved = totals.reserved - amount;
            totals.today += cost;
            totals.this_month += cost;
        });
    }

    /// Releases a hold of `amount`, whatever the day now.
    pub(super) fn release(&self, tenant: &str, amount: Usd) {
        self.with_tenant(tenant, |totals| totals.reserved = totals.reserved - amount);
    }

    /// Counts an escalation after all toward `day`'s share, while that day is current.
    pub(super) fn escalate(&self, tenant: &str, day: u64) {
        self.with_tenant(tenant, |totals| {
            if totals.day == day {
                totals.escalations.escalated += 1;
            }
        });
    }

    /// Runs `f` on a tenant's totals as they are, under the lock.
    fn with_tenant(&self, tenant: &str, f: impl FnOnce(&mut Totals)) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(totals) = tenants.get_mut(tenant) {
            f(totals);
        }
    }

    pub(super) fn restore(&self, tenant: &str, restored: &Restored, today: u64) {
        self.with_totals(tenant, today, |totals| {
            totals.today += restored.today;
            totals.this_month += restored.this_month;
            totals.escalations.routed += restored.routed;
            totals.escalations.escalated += restored.escalated;
        });
    }

    pub(super) fn sticky_tier(&self, key: ConversationKey) -> Option<String> {
        self.conversations.tier(key, Instant::now())
    }

    pub(super) fn stick(&self, key: ConversationKey, tier: &str, ttl: Duration) {
        self.conversations.remember(key, tier, ttl, Instant::now());
    }
}
