//! Every way an upstream fails, one case each, against a model with no fallback: the client gets
//! the documented status (or, once a stream has started, an error event), the failure is counted
//! in `upstream_errors_total{kind}`, the request is in the ledger with that status, and nothing
//! is left running: no request in flight, no upstream answer still open.

mod support;

use std::time::Duration;

use fake_upstream::{Behaviour, FakeUpstream};
use serde_json::Value;
use support::*;

struct Fault {
    name: &'static str,
    /// What the fake does on each attempt (three attempts per model in the test config).
    script: Vec<Behaviour>,
    model: &'static str,
    stream: bool,
    /// The HTTP status the client gets, and the error code in its body or last event.
    status: u16,
    code: &'static str,
    /// The upstream error counted, and the ledger's status for the request.
    kind: &'static str,
    recorded: u16,
}

fn faults() -> Vec<Fault> {
    let thrice = |b: Behaviour| vec![b; 3];
    let fault = |name, script, stream, status, code, kind, recorded| Fault {
        name,
        script,
        model: "solo",
        stream,
        status,
        code,
        kind,
        recorded,
    };
    // The same broken body, whole (JSON) or streamed (SSE).
    let malformed = || {
        thrice(Behaviour {
            malformed: true,
            ..Behaviour::default()
        })
    };
    let mid_stream = |b: Behaviour| Behaviour {
        chunk_delay_ms: 50,
        ..b
    };
    vec![
        fault(
            "500",
            thrice(Behaviour::fail(500)),
            false,
            502,
            "upstream_error",
            "server_error",
            502,
        ),
        fault(
            "502",
            thrice(Behaviour::fail(502)),
            false,
            502,
            "upstream_error",
            "server_error",
            502,
        ),
        fault(
            "503",
            thrice(Behaviour::fail(503)),
            true,
            502,
            "upstream_error",
            "server_error",
            502,
        ),
        fault(
            "429 with a long Retry-After",
            vec![Behaviour::fail_with_retry_after(429, 60)],
            false,
            429,
            "rate_limit_exceeded",
            "rate_limited",
            429,
        ),
        fault(
            "silence",
            thrice(Behaviour::delay(10_000)),
            false,
            504,
            "upstream_timeout",
            "timeout",
            504,
        ),
        fault(
            "malformed JSON",
            malformed(),
            false,
            502,
            "upstream_error",
            "protocol",
            502,
        ),
        fault(
            "malformed SSE",
            malformed(),
            true,
            502,
            "upstream_error",
            "protocol",
            502,
        ),
        fault(
            "connection reset mid-stream",
            vec![mid_stream(Behaviour::drop_after(3))],
            true,
            200,
            "upstream_error",
            "interrupted",
            502,
        ),
        fault(
            "a stream that goes silent",
            vec![mid_stream(Behaviour {
                stall_after_chunks: Some(2),
                ..Behaviour::default()
            })],
            true,
            200,
            "upstream_timeout",
            "timeout",
            504,
        ),
        Fault {
            model: "nowhere-model",
            ..fault(
                "connection refused",
                vec![],
                false,
                502,
                "upstream_error",
                "connect",
                502,
            )
        },
    ]
}

/// The value of one series of `/metrics`, 0 when it is absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn every_upstream_fault_ends_documented_counted_recorded_and_cleaned_up() {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let nowhere = format!(
        "  - name: nowhere\n    kind: openai\n    base_url: http://127.0.0.1:{}/v1\n    api_key_env: UPSTREAM_KEY\n    models:\n      - {{ name: nowhere-model, price: {{ input_per_mtok: 1, output_per_mtok: 1 }} }}\ntenants:",
        closed_port()
    );
    let yaml = config(&openai, &anthropic, "").replacen("tenants:", &nowhere, 1);
    let gateway = TestGateway::start(&yaml).await;

    for (n, fault) in faults().into_iter().enumerate() {
        let name = fault.name;
        // A fault that is not retried leaves the rest of its script behind.
        openai.clear_script();
        openai.push(fault.script);
        let provider = if fault.model == "solo" {
            "fake-openai"
        } else {
            "nowhere"
        };
        let counter = format!(
            r#"switchboard_upstream_errors_total{{kind="{}",provider="{provider}"}}"#,
            fault.kind
        );
        let before = series(&gateway.metrics().await, &counter);

        let id = format!("fault-{n}");
        let body = match fault.stream {
            true => hello_stream(fault.model, false),
            false => hello(fault.model),
        };
        let response = gateway
            .chat(ACME_KEY, &body)
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), fault.status, "{name}");
        let error = if response.status() == 200 {
            let (events, done) = read_sse(response).await;
            assert!(
                !done,
                "{name}: a broken stream does not claim to be complete"
            );
            events.last().unwrap()["error"].clone()
        } else {
            response.json::<Value>().await.unwrap()["error"].clone()
        };
        assert_eq!(error["code"], fault.code, "{name}: {error}");

        let metrics = gateway.metrics().await;
        assert!(
            series(&metrics, &counter) > before,
            "{name}: {counter} not counted"
        );
        let recorded: Vec<_> = gateway
            .gateway
            .ledger
            .since(0)
            .map(Result::unwrap)
            .filter(|entry| entry.request_id == id)
            .collect();
        assert_eq!(recorded.len(), 1, "{name}: one ledger record");
        assert_eq!(recorded[0].status, fault.recorded, "{name}");

        // Nothing left running, here or upstream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let in_flight = series(&gateway.metrics().await, "switchboard_in_flight_requests");
            if in_flight == 0.0 && openai.stats().active == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {in_flight} requests in flight, {} upstream answers open",
                openai.stats().active
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
