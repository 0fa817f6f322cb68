//! A tenant's rules (budgets, the cap on escalations, whether its clients may force a route)
//! and the state the decision reads: what it has spent, how much of its traffic escalated.

use crate::decision::TenantState;
use crate::money::Usd;
use crate::problems::{KeyPath, Problem};
use crate::spec::{BudgetAction, BudgetSpec};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantRules {
    pub budget: Option<Budget>,
    /// The largest share of routed requests that may escalate, over a UTC day.
    pub escalation_cap: Option<f64>,
    /// Whether `x-switchboard-route: local|remote` from its clients is obeyed.
    pub may_force_route: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub daily: Option<Usd>,
    pub monthly: Option<Usd>,
    pub when_spent: BudgetAction,
}

/// A budget's accounting period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Day,
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "daily",
            Window::Month => "monthly",
        }
    }
}

/// What a tenant has spent (settled and reserved) in the current windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub today: Usd,
    pub this_month: Usd,
}

impl Budget {
    /// The window whose budget is spent, if any: nothing more may be spent in it.
    pub fn spent(&self, spend: Spend) -> Option<Window> {
        if self.daily.is_some_and(|limit| spend.today >= limit) {
            Some(Window::Day)
        } else if self.monthly.is_some_and(|limit| spend.this_month >= limit) {
            Some(Window::Month)
        } else {
            None
        }
    }

    /// The smallest share of a window's limit that is left (0 when spent, 1 when untouched).
    pub fn remaining_share(&self, spend: Spend) -> Option<f64> {
        let share = |limit: Option<Usd>, spent: Usd| {
            limit.map(|limit| match limit.nanos() {
                0 => 0.0,
                nanos => ((limit - spent).nanos() as f64 / nanos as f64).clamp(0.0, 1.0),
            })
        };
        let day = share(self.daily, spend.today);
        let month = share(self.monthly, spend.this_month);
        match (day, month) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is left in the tighter of the two windows.
    pub fn remaining(&self, spend: Spend) -> Option<Usd> {
        let day = self.daily.map(|limit| limit - spend.today);
        let month = self.monthly.map(|limit| limit - spend.this_month);
        match (day, month) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the decision reads of a tenant's state: which budget window is spent, and whether one
/// more escalation fits under the cap. States with the same outlook get the same decision, so
/// a store that cannot run the decision under its lock (Redis, for a fleet) reserves only if
/// the outlook that the decision saw still holds, and otherwise has it decided again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    pub spent: Option<Window>,
    pub may_escalate: bool,
}

impl TenantRules {
    /// The outlook of `state` under these rules.
    pub fn outlook(&self, state: &TenantState) -> Outlook {
        Outlook {
            spent: self.budget.and_then(|b| b.spent(state.spend)),
            may_escalate: state.escalations.allows_one_more(self.escalation_cap),
        }
    }
}

/// The routed requests of a tenant in the cap's window, and how many of them escalated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EscalationCount {
    pub routed: u64,
    pub escalated: u64,
}

impl EscalationCount {
    /// Whether one more escalation keeps the share within `cap`, counting the request itself.
    pub fn allows_one_more(&self, cap: Option<f64>) -> bool {
        cap.is_none_or(|cap| (self.escalated + 1) as f64 <= cap * (self.routed + 1) as f64)
    }

    /// The share of escalated requests if one more request escalated.
    pub fn share_with_one_more(&self) -> f64 {
        (self.escalated + 1) as f64 / (self.routed + 1) as f64
    }
}

impl TenantRules {
    /// Validates a tenant's rules as written under `at`.
    pub fn build(
        budget: Option<&BudgetSpec>,
        escalation_cap: Option<f64>,
        may_force_route: bool,
        at: &KeyPath,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let budget = budget.map(|spec| {
            let mut amount = |usd: Option<f64>, key: &str| {
                let amount = usd.map(|usd| Usd::from_dollars(usd).filter(|a| !a.is_negative()));
                if let Some(None) = amount {
                    problems.push(
                        Problem::new(
                            at.key("budget").key(key),
                            format!("{} is not an amount of dollars", usd.unwrap_or_default()),
                        )
                        .hint("a number of USD, 0 or more"),
                    );
                }
                amount.flatten()
            };
            let daily = amount(spec.daily_usd, "daily_usd");
            let monthly = amount(spec.monthly_usd, "monthly_usd");
            if spec.daily_usd.is_none() && spec.monthly_usd.is_none() {
                problems.push(
                    Problem::new(at.key("budget"), "a budget without an amount")
                        .hint("give daily_usd, monthly_usd or both"),
                );
            }
            Budget {
                daily,
                monthly,
                when_spent: spec.when_spent,
            }
        });
        if let Some(cap) = escalation_cap
            && !(0.0..=1.0).contains(&cap)
        {
            problems.push(
                Problem::new(
                    at.key("max_escalation_share"),
                    format!("{cap} is not a share"),
                )
                .hint("a fraction of requests, from 0 to 1"),
            );
        }
        if problems.is_empty() {
            Ok(Self {
                budget,
                escalation_cap,
                may_force_route,
            })
        } else {
            Err(problems)
        }
    }
}

/// Calendar arithmetic for the budgets' windows, in UTC, from Unix seconds.
pub mod calendar {
    /// Days since 1970-01-01.
    pub fn day(unix_seconds: u64) -> u64 {
        unix_seconds / 86_400
    }

    /// The first day of `day`'s month.
    pub fn first_of_month(day: u64) -> u64 {
        let month = month(day);
        (day.saturating_sub(30)..=day)
            .find(|&d| self::month(d) == month)
            .unwrap_or(day)
    }

    /// Unix milliseconds at the start of `day`.
    pub fn start_ms(day: u64) -> u64 {
        day * 86_400_000
    }

    /// (year, month 1–12) of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub fn month(day: u64) -> (i64, u32) {
        let z = day as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_of_days_follow_the_calendar() {
        assert_eq!(calendar::month(0), (1970, 1));
        assert_eq!(calendar::month(30), (1970, 1));
        assert_eq!(calendar::month(31), (1970, 2));
        assert_eq!(calendar::first_of_month(30), 0);
        assert_eq!(calendar::first_of_month(31), 31);
        assert_eq!(calendar::first_of_month(59), 59); // 1970-03-01
        // 2024-02-29 is day 19782; 2024-03-01 is 19783.
        assert_eq!(calendar::month(19_782), (2024, 2));
        assert_eq!(calendar::month(19_783), (2024, 3));
        // 2026-11-26T12:00:00Z
        assert_eq!(calendar::month(calendar::day(1_795_701_600)), (2026, 11));
    }

    #[test]
    fn a_budget_is_spent_when_either_window_reaches_its_limit() {
        let usd = |d: f64| Usd::from_dollars(d).unwrap();
        let budget = Budget {
            daily: Some(usd(1.0)),
            monthly: Some(usd(10.0)),
            when_spent: BudgetAction::LocalOnly,
        };
        let spend = |today, month| Spend {
            today: usd(today),
            this_month: usd(month),
        };
        assert_eq!(budget.spent(spend(0.5, 5.0)), None);
        assert_eq!(budget.spent(spend(1.0, 5.0)), Some(Window::Day));
        assert_eq!(budget.spent(spend(0.1, 10.0)), Some(Window::Month));
        assert_eq!(budget.remaining(spend(0.25, 9.9)), Some(usd(0.1)));
        assert_eq!(budget.remaining_share(spend(0.25, 9.0)), Some(0.1));
        assert_eq!(budget.remaining_share(spend(2.0, 0.0)), Some(0.0));
    }

    #[test]
    fn the_cap_counts_the_request_itself() {
        let count = |routed, escalated| EscalationCount { routed, escalated };
        assert!(count(0, 0).allows_one_more(None));
        assert!(!count(0, 0).allows_one_more(Some(0.5)));
        assert!(count(1, 0).allows_one_more(Some(0.5)));
        assert!(!count(3, 2).allows_one_more(Some(0.5)));
        assert!(count(3, 1).allows_one_more(Some(0.5)));
        assert!(count(9, 9).allows_one_more(Some(1.0)));
    }

    #[test]
    fn bad_rules_are_reported_at_their_paths() {
        let spec = BudgetSpec {
            daily_usd: Some(-1.0),
            monthly_usd: None,
            when_spent: BudgetAction::Reject,
        };
        let at = KeyPath::root().key("tenants").index(2);
        let problems = TenantRules::build(Some(&spec), Some(1.5), false, &at).unwrap_err();
        let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[0].starts_with("tenants[2].budget.daily_usd: -1"),
            "{all:?}"
        );
        assert!(
            all[1].starts_with("tenants[2].max_escalation_share: 1.5"),
            "{all:?}"
        );
    }
}
