//! Each tenant's standing in the current windows: what it has spent (settled, plus the
//! estimates of its requests still running) today and this month, and how many of its routed
//! requests escalated today. The ledger fills it at start; every request updates it.
//!
//! The decision and the reservation happen under one lock ([`Standings::decide`]), so that
//! concurrent requests of a tenant cannot all pass a budget that only one of them fits, and the
//! escalation cap holds however many arrive at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_policies::decision::TenantState;
use switchboard_policies::tenant::{EscalationCount, Spend, calendar};
use switchboard_policies::{Decision, Usd};

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

    /// Counts a request the policy routed (`Some(escalated)`) toward the escalation share.
    fn count_routed(&mut self, routed: Option<bool>) {
        if let Some(escalated) = routed {
            self.escalations.routed += 1;
            self.escalations.escalated += u64::from(escalated);
        }
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

/// What a settled request adds to its tenant's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub unix_seconds: u64,
    pub cost: Usd,
    /// Whether it was routed by the policy, and whether that sent it remote.
    pub routed: Option<bool>,
}

#[derive(Default)]
pub struct Standings {
    tenants: Mutex<HashMap<String, Totals>>,
}

impl Standings {
    /// Runs `f` on a tenant's totals, their windows moved to `today`, under the lock.
    fn with_totals<R>(&self, tenant: &str, today: u64, f: impl FnOnce(&mut Totals) -> R) -> R {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let totals = tenants.entry(tenant.to_owned()).or_default();
        totals.roll_to(today);
        f(totals)
    }

    /// Adds a request from the ledger, or one that just finished, to its tenant's totals.
    /// Records of past windows are ignored.
    pub fn add(&self, tenant: &str, settled: Settled, today: u64) {
        self.with_totals(tenant, today, |totals| {
            let day = calendar::day(settled.unix_seconds);
            if calendar::month(day) == calendar::month(today) {
                totals.this_month += settled.cost;
            }
            if day == today {
                totals.today += settled.cost;
                totals.count_routed(settled.routed);
            }
        });
    }

    /// The tenant's state as the decision reads it.
    pub fn state(&self, tenant: &str, today: u64) -> TenantState {
        self.with_totals(tenant, today, |totals| totals.state())
    }

    /// Decides with the tenant's current state and, in the same breath, reserves the
    /// decision's estimated cost and counts a routed decision toward the escalation share.
    /// `decide` returns the decision, the estimate to reserve, and whether it routed the
    /// request (`Some(escalated)`).
    pub fn decide(
        self: &Arc<Self>,
        tenant: &str,
        today: u64,
        decide: impl FnOnce(TenantState) -> (Decision, Usd, Option<bool>),
    ) -> (Decision, Reservation) {
        let (decision, estimate, routed) = self.with_totals(tenant, today, |totals| {
            let (decision, estimate, routed) = decide(totals.state());
            totals.reserved += estimate;
            totals.count_routed(routed);
            (decision, estimate, routed)
        });
        let reservation = Reservation {
            standings: self.clone(),
            tenant: tenant.to_owned(),
            amount: estimate,
            routed,
        };
        (decision, reservation)
    }
}

/// An estimate held against a tenant's budget while its request runs; released when the
/// request settles (its actual cost then counts) or is dropped.
pub struct Reservation {
    standings: Arc<Standings>,
    tenant: String,
    amount: Usd,
    routed: Option<bool>,
}

impl Reservation {
    /// Replaces the estimate by the actual cost.
    pub fn settle(mut self, cost: Usd, unix_seconds: u64) {
        let amount = std::mem::take(&mut self.amount);
        let today = calendar::day(unix_seconds);
        self.standings.with_totals(&self.tenant, today, |totals| {
            totals.reserved = totals.reserved - amount;
            totals.today += cost;
            totals.this_month += cost;
        });
    }

    /// Changes the tenant's totals under the lock.
    fn update(&self, change: impl FnOnce(&mut Totals)) {
        let mut tenants = self
            .standings
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(totals) = tenants.get_mut(&self.tenant) {
            change(totals);
        }
    }

    /// Whether the decision routed the request, and sent it remote.
    pub fn routed(&self) -> Option<bool> {
        self.routed
    }

    /// A routed request answered locally escalated after all (the confidence cascade).
    pub fn escalate(&mut self) {
        if self.routed == Some(false) {
            self.routed = Some(true);
            self.update(|totals| totals.escalations.escalated += 1);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.amount != Usd::ZERO {
            let amount = self.amount;
            self.update(|totals| totals.reserved = totals.reserved - amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_policies::TierId;
    use switchboard_policies::decision::{Destination, Reason};

    fn usd(d: f64) -> Usd {
        Usd::from_dollars(d).unwrap()
    }

    fn local() -> Decision {
        Decision {
            destination: Destination::Tier(TierId(0)),
            reason: Reason::Unscored,
            redact: false,
            local_fallback: false,
            cascade: None,
        }
    }

    #[test]
    fn reservations_count_until_settled_and_windows_roll() {
        let standings = Arc::new(Standings::default());
        let day = 20_000;
        let secs = day * 86_400;
        standings.add(
            "a",
            Settled {
                unix_seconds: secs - 86_400,
                cost: usd(1.0),
                routed: Some(true),
            },
            day,
        );
        standings.add(
            "a",
            Settled {
                unix_seconds: secs + 5,
                cost: usd(0.5),
                routed: Some(false),
            },
            day,
        );
        let state = standings.state("a", day);
        assert_eq!(state.spend.today, usd(0.5));
        assert_eq!(state.spend.this_month, usd(1.5));
        assert_eq!(
            state.escalations,
            EscalationCount {
                routed: 1,
                escalated: 0
            }
        );

        let (_, reservation) = standings.decide("a", day, |_| (local(), usd(0.25), Some(true)));
        let state = standings.state("a", day);
        assert_eq!(state.spend.today, usd(0.75));
        assert_eq!(
            state.escalations,
            EscalationCount {
                routed: 2,
                escalated: 1
            }
        );
        reservation.settle(usd(0.1), secs + 10);
        assert_eq!(standings.state("a", day).spend.today, usd(0.6));

        let (_, dropped) = standings.decide("a", day, |_| (local(), usd(0.25), None));
        drop(dropped);
        assert_eq!(standings.state("a", day).spend.today, usd(0.6));

        // The next day: today's totals start again, the month's go on (day 20,000 is
        // 2024-10-04, so the next day is in the same month).
        let state = standings.state("a", day + 1);
        assert_eq!(state.spend.today, Usd::ZERO);
        assert_eq!(state.spend.this_month, usd(1.6));
        assert_eq!(state.escalations, EscalationCount::default());
    }
}
