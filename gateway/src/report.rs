//! Reports over the ledger: requests, the share answered locally, cost, counterfactual,
//! savings, latency and feedback, grouped by tenant, domain, route or model. The same rows go to
//! `switchboard report` (table, CSV, JSON) and to `GET /v1/usage`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_policies::Usd;

use crate::ledger::{Entry, Ledger, LedgerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Tenant,
    Domain,
    Route,
    Model,
}

impl GroupBy {
    fn key(self, entry: &Entry) -> String {
        match self {
            GroupBy::Tenant => entry.tenant.clone(),
            GroupBy::Domain => entry.domain.clone().unwrap_or_else(|| "-".to_owned()),
            GroupBy::Route => entry.route.clone(),
            GroupBy::Model => entry.model.clone(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Tenant => "tenant",
            GroupBy::Domain => "domain",
            GroupBy::Route => "route",
            GroupBy::Model => "model",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            GroupBy::Tenant,
            GroupBy::Domain,
            GroupBy::Route,
            GroupBy::Model,
        ]
        .into_iter()
        .find(|g| g.as_str() == text)
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
            .ok_or_else(|| format!("'{text}' is not one of tenant, domain, route, model"))
    }
}

/// One group's figures. Money is summed exactly (nano-dollars), then shown in USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub group: String,
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// The share of answered requests that were answered locally.
    pub local_share: f64,
    pub cost_usd: f64,
    pub counterfactual_usd: f64,
    pub savings_usd: f64,
    pub latency_p50_ms: u64,
    pub latency_p95_ms: u64,
    pub feedback: u64,
    /// The mean feedback score, from -1 to 1.
    pub feedback_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub since_ms: u64,
    pub by: GroupBy,
    pub rows: Vec<Row>,
    /// Every group together.
    pub total: Row,
}

#[derive(Default)]
struct Group {
    requests: u64,
    errors: u64,
    answered: u64,
    local: u64,
    cost: Usd,
    counterfactual: Usd,
    durations: Vec<u64>,
    scores: Vec<f64>,
}

impl Group {
    fn add(&mut self, entry: &Entry, score: Option<f64>) {
        self.requests += 1;
        if entry.status >= 400 {
            self.errors += 1;
        } else {
            self.answered += 1;
            self.local += u64::from(entry.route == "local");
        }
        self.cost += entry.cost;
        self.counterfactual += entry.counterfactual;
        self.durations.push(entry.duration_ms);
        self.scores.extend(score);
    }

    fn row(mut self, group: String) -> Row {
        self.durations.sort_unstable();
        let percentile = |p: f64| {
            let n = self.durations.len();
            if n == 0 {
                return 0;
            }
            self.durations[((n - 1) as f64 * p).round() as usize]
        };
        Row {
            group,
            requests: self.requests,
            errors: self.errors,
            local_share: if self.answered == 0 {
                0.0
            } else {
                self.local as f64 / self.answered as f64
            },
            cost_usd: self.cost.as_dollars(),
            counterfactual_usd: self.counterfactual.as_dollars(),
            savings_usd: (self.counterfactual - self.cost).as_dollars(),
            latency_p50_ms: percentile(0.5),
            latency_p95_ms: percentile(0.95),
            feedback: self.scores.len() as u64,
            feedback_mean: (!self.scores.is_empty())
                .then(|| self.scores.iter().sum::<f64>() / self.scores.len() as f64),
        }
    }
}

/// The report of the ledger's records from `since_ms` on, for one tenant or all.
pub fn build(
    ledger: &Ledger,
    since_ms: u64,
    by: GroupBy,
    tenant: Option<&str>,
) -> Result<Report, LedgerError> {
    let entries = ledger
        .since(since_ms)
        .filter(|entry| {
            let other = |entry: &Entry| tenant.is_some_and(|t| t != entry.tenant);
            !entry.as_ref().is_ok_and(other)
        })
        .map(|entry| {
            let entry = entry?;
            let score = ledger
                .feedback_for(&entry.tenant, &entry.request_id)?
                .map(|f| f.score);
            Ok((entry, score))
        });
    summarize(entries, since_ms, by)
}

/// The report of `entries` (records from `since_ms` on, each with its feedback score, if
/// any), grouped `by`: of one ledger ([`build`]) or of a fleet's table.
pub fn summarize<E>(
    entries: impl IntoIterator<Item = Result<(Entry, Option<f64>), E>>,
    since_ms: u64,
    by: GroupBy,
) -> Result<Report, E> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut total = Group::default();
    for entry in entries {
        let (entry, score) = entry?;
        groups.entry(by.key(&entry)).or_default().add(&entry, score);
        total.add(&entry, score);
    }
    Ok(Report {
        since_ms,
        by,
        rows: groups.into_iter().map(|(k, g)| g.row(k)).collect(),
        total: total.row("total".to_owned()),
    })
}

/// A user's verdict on a local answer, with the text the router read: what `switchboard report
/// --feedback-labels` turns into a training label for `router train --labels`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackLabel {
    pub text: String,
    /// The user judged the answer bad (score below 0): the local model was not good enough.
    pub hard: bool,
    pub domain: Option<String>,
}

/// Each locally answered request that a user judged, and whose routing text the ledger kept.
/// Verdicts on remote answers say nothing about the local model and are left out.
pub fn feedback_labels(ledger: &Ledger, since_ms: u64) -> Result<Vec<FeedbackLabel>, LedgerError> {
    let mut labels = Vec::new();
    for entry in ledger.since(since_ms) {
        let entry = entry?;
        let (Some(text), "local", true) = (
            &entry.routing_text,
            entry.route.as_str(),
            entry.status < 400,
        ) else {
            continue;
        };
        if let Some(verdict) = ledger.feedback_for(&entry.tenant, &entry.request_id)? {
            labels.push(FeedbackLabel {
                text: text.clone(),
                hard: verdict.score < 0.0,
                domain: entry.domain.clone(),
            });
        }
    }
    Ok(labels)
}

/// The Unix millisecond `ago` before now: where a report of the last `ago` starts.
pub fn since_ms(ago: Duration) -> u64 {
    crate::api::unix_millis().saturating_sub(ago.as_millis() as u64)
}

/// `7d`, `24h`, `30m`, `90s`.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("'{text}' is not a duration: give a number and a unit (d, h, m, s), e.g. 7d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let number: u64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let seconds = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// How `switchboard report` prints a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            _ => Err(format!("'{text}' is not one of table, csv, json")),
        }
    }
}

const COLUMNS: [&str; 10] = [
    "requests",
    "errors",
    "local",
    "cost_usd",
    "counterfactual_usd",
    "savings_usd",
    "p50_ms",
    "p95_ms",
    "feedback",
    "feedback_mean",
];

fn cells(row: &Row) -> Vec<String> {
    vec![
        row.group.clone(),
        row.requests.to_string(),
        row.errors.to_string(),
        format!("{:.1}%", row.local_share * 100.0),
        format!("{:.6}", row.cost_usd),
        format!("{:.6}", row.counterfactual_usd),
        format!("{:.6}", row.savings_usd),
        row.latency_p50_ms.to_string(),
        row.latency_p95_ms.to_string(),
        row.feedback.to_string(),
        row.feedback_mean
            .map_or("-".to_owned(), |m| format!("{m:.2}")),
    ]
}

/// The report as text in `format`; the last row is the total.
pub fn render(report: &Report, format: Format) -> String {
    let header: Vec<String> = std::iter::once(report.by.as_str())
        .chain(COLUMNS)
        .map(str::to_owned)
        .collect();
    let rows = report.rows.iter().chain([&report.total]).map(cells);
    match format {
        Format::Json => serde_json::to_string_pretty(report).expect("a report serializes"),
        Format::Csv => {
            let mut out = header.join(",") + "\n";
            for mut row in rows {
                row[0] = format!("\"{}\"", row[0].replace('"', "\"\""));
                let _ = writeln!(out, "{}", row.join(","));
            }
            out
        }
        Format::Table => {
            let lines: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
            let widths: Vec<usize> = (0..lines[0].len())
                .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
                .collect();
            let mut out = String::new();
            for line in &lines {
                for (c, cell) in line.iter().enumerate() {
                    let width = widths[c];
                    let _ = match c {
                        0 => write!(out, "{cell:<width$}"),
                        _ => write!(out, "  {cell:>width$}"),
                    };
                }
                out.push('\n');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Feedback;

    #[test]
    fn rows_sum_to_the_ledger_and_group_as_asked() {
        let dir = std::env::temp_dir().join(format!("switchboard-report-{}", fastrand::u64(..)));
        let ledger = Ledger::open(&dir, 500, true).unwrap();
        let mut entries = Vec::new();
        for i in 0..40u64 {
            let remote = i % 3 == 0;
            let entry = Entry {
                request_id: format!("r{i}"),
                at_ms: 1_000 + i,
                tenant: ["acme", "globex"][(i % 2) as usize].to_owned(),
                route: if remote { "remote" } else { "local" }.to_owned(),
                model: if remote { "gpt" } else { "slm" }.to_owned(),
                domain: Some("it_helpdesk".to_owned()),
                complexity: Some(0.5),
                reason: None,
                reason_code: None,
                escalated: Some(remote),
                prompt_tokens: 10,
                completion_tokens: 5,
                usage_estimated: false,
                cost: Usd::from_nanos(if remote { 1_234 } else { 0 }),
                counterfactual: Usd::from_nanos(9_999),
                duration_ms: i * 10,
                first_token_ms: None,
                status: if i == 7 { 502 } else { 200 },
                routing_text: Some(format!("question {i}")),
            };
            ledger.record(&entry).unwrap();
            entries.push(entry);
        }
        let feedback = Feedback {
            request_id: "r0".into(),
            tenant: "acme".into(),
            at_ms: 5_000,
            score: -1.0,
            comment: Some("wrong".into()),
        };
        ledger.add_feedback(&feedback).unwrap().unwrap();

        let report = build(&ledger, 0, GroupBy::Tenant, None).unwrap();
        let groups: Vec<&str> = report.rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(groups, ["acme", "globex"]);
        assert_eq!(report.total.requests, 40);
        assert_eq!(report.total.errors, 1);
        let cost: Usd = entries.iter().map(|e| e.cost).sum();
        assert_eq!(report.total.cost_usd, cost.as_dollars());
        let rows_cost: f64 = report.rows.iter().map(|r| r.cost_usd).sum();
        assert!((rows_cost - report.total.cost_usd).abs() < 1e-15);
        let counterfactual = Usd::from_nanos(9_999 * 40);
        assert_eq!(report.total.counterfactual_usd, counterfactual.as_dollars());
        assert_eq!(report.rows[0].feedback, 1);
        assert_eq!(report.rows[0].feedback_mean, Some(-1.0));
        // 14 of the 40 went remote; the 26 local ones include the failed one: 25 of 39 answered
        // requests were answered locally.
        let share = report.total.local_share;
        assert!((share - 25.0 / 39.0).abs() < 1e-12, "{share}");
        assert_eq!(report.total.latency_p50_ms, 200);

        let by_route = build(&ledger, 1_020, GroupBy::Route, Some("acme")).unwrap();
        assert_eq!(by_route.total.requests, 10);
        let routes: Vec<&str> = by_route.rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(routes, ["local", "remote"]);

        let csv = render(&report, Format::Csv);
        assert!(
            csv.starts_with("tenant,requests,errors,local,cost_usd"),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 4);
        let table = render(&report, Format::Table);
        assert!(
            table.lines().last().unwrap().starts_with("total "),
            "{table}"
        );
        let json: Report = serde_json::from_str(&render(&report, Format::Json)).unwrap();
        assert_eq!(json, report);

        // r0 went remote: its verdict teaches nothing about the local model. A verdict on a
        // local answer does.
        assert!(feedback_labels(&ledger, 0).unwrap().is_empty());
        let verdict = Feedback {
            request_id: "r2".into(),
            tenant: "acme".into(),
            at_ms: 5_000,
            score: -0.5,
            comment: None,
        };
        ledger.add_feedback(&verdict).unwrap().unwrap();
        let labels = feedback_labels(&ledger, 0).unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(
            (labels[0].text.as_str(), labels[0].hard),
            ("question 2", true)
        );
        drop(ledger);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_since("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_since("7").is_err());
        assert!(parse_since("d").is_err());
        assert!(parse_since("3w").is_err());
        assert_eq!(GroupBy::parse("model"), Some(GroupBy::Model));
        assert_eq!(GroupBy::parse("nope"), None);
    }
}
