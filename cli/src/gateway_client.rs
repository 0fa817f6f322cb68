//! Asking a running gateway from the command line, with the key in `$SWITCHBOARD_API_KEY`.

use anyhow::Context;
use serde_json::Value;

/// `base` (`http://127.0.0.1:8080`) joined with `path` (`/v1/usage`).
pub fn endpoint(base: &str, path: &str) -> anyhow::Result<reqwest::Url> {
    reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .with_context(|| format!("'{base}' is not a URL"))
}

/// GETs `url`, or POSTs `body` to it, and returns the JSON answer.
pub fn call(url: reqwest::Url, body: Option<&Value>) -> anyhow::Result<Value> {
    let key = std::env::var("SWITCHBOARD_API_KEY")
        .context("set SWITCHBOARD_API_KEY to a key of the gateway (an admin tenant's sees all)")?;
    // reqwest is built without a default TLS backend.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let request = match body {
            Some(body) => client.post(url.clone()).json(body),
            None => client.get(url.clone()),
        };
        let response = request
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {text}");
        serde_json::from_str(&text).context("the gateway's answer is not JSON")
    })
}
