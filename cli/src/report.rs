//! `switchboard report`: the ledger's figures, read from the ledger itself, from a fleet's
//! PostgreSQL table (a policy with `fleet.postgres`), or from a running gateway's
//! `GET /v1/usage`.

use anyhow::Context;

use switchboard_gateway::config::{Config, PostgresConfig};
use switchboard_gateway::ledger::postgres::FleetTable;
use switchboard_gateway::ledger::{Ledger, LedgerError};
use switchboard_gateway::report::{self, Report};
use switchboard_router_train::labelling::Labelled;

use crate::args::ReportArgs;
use crate::gateway_client;

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let since = report::parse_since(&args.since).map_err(anyhow::Error::msg)?;
    let report = match &args.url {
        Some(url) => ask_gateway(url, &args)?,
        None => {
            let config = Config::load(&args.config)?;
            let fleet = config.fleet.as_ref().and_then(|f| f.postgres.as_ref());
            if let Some(postgres) = fleet
                && args.feedback_labels.is_none()
            {
                return fleet_report(postgres, since, &args);
            }
            let ledger = Ledger::from_config(&config.ledger).map_err(|error| match error {
                LedgerError::Locked(path) => anyhow::anyhow!(
                    "the ledger at {} is held by a running gateway: ask it with --url http://HOST:PORT (key in $SWITCHBOARD_API_KEY)",
                    path.display()
                ),
                other => other.into(),
            })?;
            let since_ms = report::since_ms(since);
            if let Some(out) = &args.records {
                let mut records = Vec::new();
                for entry in ledger.since(since_ms) {
                    let entry = entry?;
                    if args.tenant.as_ref().is_none_or(|t| *t == entry.tenant) {
                        records.push(entry);
                    }
                }
                write_json_lines(out, &records)?;
                println!("{}: {} records", out.display(), records.len());
                return Ok(());
            }
            if let Some(out) = &args.feedback_labels {
                let labels: Vec<Labelled> = report::feedback_labels(&ledger, since_ms)?
                    .into_iter()
                    .map(|l| Labelled {
                        text: l.text,
                        hard: l.hard,
                        domain: l.domain,
                        source: Some("feedback".to_owned()),
                    })
                    .collect();
                write_json_lines(out, &labels)?;
                let hard = labels.iter().filter(|l| l.hard).count();
                println!(
                    "{}: {} labels from feedback ({hard} hard); train with `switchboard router train --labels {}`",
                    out.display(),
                    labels.len(),
                    out.display()
                );
                return Ok(());
            }
            report::build(&ledger, since_ms, args.by, args.tenant.as_deref())?
        }
    };
    print!("{}", report::render(&report, args.format));
    Ok(())
}

/// The report (or the records) of a fleet, from its PostgreSQL table: every replica's requests
/// and users' verdicts, whichever replica's policy file is given.
fn fleet_report(
    postgres: &PostgresConfig,
    since: std::time::Duration,
    args: &ReportArgs,
) -> anyhow::Result<()> {
    let url = std::env::var(&postgres.url_env).with_context(|| {
        format!(
            "the fleet's ledger is in PostgreSQL: set {} to its connection string",
            postgres.url_env
        )
    })?;
    let table = FleetTable::new(url, postgres.timeout);
    let since_ms = report::since_ms(since);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scored = runtime.block_on(table.scored_since(since_ms, args.tenant.as_deref()))?;
    if let Some(out) = &args.records {
        let records: Vec<_> = scored.into_iter().map(|(entry, _)| entry).collect();
        write_json_lines(out, &records)?;
        println!("{}: {} records", out.display(), records.len());
        return Ok(());
    }
    let scored = scored.into_iter().map(Ok::<_, std::convert::Infallible>);
    let report = match report::summarize(scored, since_ms, args.by) {
        Ok(report) => report,
        Err(never) => match never {},
    };
    print!("{}", report::render(&report, args.format));
    Ok(())
}

fn write_json_lines<T: serde::Serialize>(out: &std::path::Path, items: &[T]) -> anyhow::Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}

fn ask_gateway(url: &str, args: &ReportArgs) -> anyhow::Result<Report> {
    let mut usage = gateway_client::endpoint(url, "/v1/usage")?;
    usage
        .query_pairs_mut()
        .append_pair("since", &args.since)
        .append_pair("by", args.by.as_str());
    if let Some(tenant) = &args.tenant {
        usage.query_pairs_mut().append_pair("tenant", tenant);
    }
    let answer = gateway_client::call(usage, None)?;
    serde_json::from_value(answer).context("the gateway's answer is not a report")
}
