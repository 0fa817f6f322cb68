//! Hostile clients: silent and slowloris connections, bodies that never finish, streams nobody
//! reads, and inputs built to hurt (deep JSON, a 5 MB message, invalid UTF-8, 10,000
//! messages). Each gets a clear error or its connection closed, and leaves no request, task or
//! upstream stream behind.

mod support;

use std::time::Duration;

use fake_upstream::Behaviour;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway whose clients get half a second for headers, bodies and reads.
async fn impatient_gateway() -> (TestGateway, fake_upstream::FakeUpstream) {
    let openai = fake_upstream::FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = fake_upstream::FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let yaml = config(&openai, &anthropic, "").replace(
        "request_timeout: 3",
        "request_timeout: 3\n  header_timeout: 0.5\n  body_timeout: 0.5\n  send_timeout: 0.5",
    );
    (TestGateway::start(&yaml).await, openai)
}

/// Reads until the gateway closes the connection; what it sent, or `None` if it kept the
/// connection open for `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.ok()?;
    Some(String::from_utf8_lossy(&received).into_owned())
}

/// Polls a gauge of `/metrics` until it reads `expected`; panics after five seconds.
async fn settle_to(gateway: &TestGateway, gauge: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = gateway.metrics().await;
        let value = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(gauge)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{gauge} missing from /metrics"));
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{gauge} stays at {value}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn silent_slow_and_unfinished_clients_are_disconnected() {
    let (gateway, _openai) = impatient_gateway().await;

    // Connects and says nothing.
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    let sent = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(sent.is_some(), "a silent connection is closed");

    // Slowloris: headers one byte at a time, never finished.
    let mut slowloris = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut reader, mut writer) = slowloris.split();
    let trickle = async {
        writer
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await?;
        loop {
            writer.write_all(b"X").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    let closed = async {
        let mut buf = [0u8; 256];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            _ = trickle => {}
            () = closed => {}
        }
    });
    assert!(outcome.await.is_ok(), "a slowloris connection is closed");

    // Headers, then a body that stops short of its length.
    let mut unfinished = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
    );
    unfinished.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut unfinished, Duration::from_secs(5))
        .await
        .expect("the gateway answers and closes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");

    settle_to(&gateway, "switchboard_in_flight_requests", 0.0).await;
    // Only the connection that reads the metrics is left.
    settle_to(&gateway, "switchboard_open_connections", 1.0).await;
}

#[tokio::test]
async fn a_stream_nobody_reads_ends_at_the_deadline_and_frees_the_upstream() {
    let (gateway, openai) = impatient_gateway().await;
    // A long answer, slowly: it would outlast the request's three-second deadline.
    let words = vec!["word"; 2000].join(" ");
    openai.push([Behaviour {
        reply: Some(words),
        chunk_delay_ms: 20,
        ..Behaviour::default()
    }]);
    let body = serde_json::to_string(&hello_stream("solo", false)).unwrap();
    let mut client = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // The client never reads. The request ends at its deadline, cut off with a timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    settle_to(&gateway, "switchboard_in_flight_requests", 0.0).await;
    assert_eq!(openai.stats().active, 0, "the upstream stream was dropped");
    let answer = read_until_closed(&mut client, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(answer.contains("upstream_timeout"), "{answer}");
    drop(client);
    settle_to(&gateway, "switchboard_open_connections", 1.0).await;
}

async fn status_and_error(gateway: &TestGateway, body: Vec<u8>) -> (u16, Value) {
    let response = gateway
        .http
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(ACME_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn inputs_built_to_hurt_get_clear_errors() {
    let (gateway, openai, _anthropic) = setup().await;
    let user = r#"[{"role":"user","content":"hi"}]"#;

    let depth = 100_000;
    let nested = format!(
        r#"{{"model":"solo","messages":{user},"user":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (status, error) = status_and_error(&gateway, nested.into_bytes()).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{error}"
    );

    let mut invalid_utf8 = br#"{"model":"solo","messages":[{"role":"user","content":"caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    let (status, error) = status_and_error(&gateway, invalid_utf8).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_request");

    let mut five_mb = hello("solo");
    five_mb["messages"][0]["content"] = json!("a".repeat(5 << 20));
    let (status, error) = status_and_error(&gateway, serde_json::to_vec(&five_mb).unwrap()).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["code"], "request_too_large");

    assert_eq!(openai.stats().requests, 0, "nothing invalid went upstream");

    // Many messages are a valid request: answered, not refused.
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "ok"}))
        .collect();
    let answer = gateway
        .chat_json(ACME_KEY, &json!({"model": "solo", "messages": many}))
        .await;
    assert_eq!(answer["object"], "chat.completion");
    settle_to(&gateway, "switchboard_in_flight_requests", 0.0).await;
}
