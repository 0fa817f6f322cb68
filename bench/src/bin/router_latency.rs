//! The router's latency: one full scoring (embedding, heads, PII, language) of a request never
//! seen before and of a repeated one (served by the recent embeddings), and the embedding alone,
//! at fixed token counts; then the throughput of 8 concurrent callers with distinct requests
//! through the micro-batcher. Prints one JSON object for `bench/router.py`, which times the same texts on
//! ONNX Runtime and sentence-transformers in the same run and prints the ratios.
//!
//! Usage: router_latency MODEL_DIR TEXTS_JSON (TEXTS_JSON maps token counts to texts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_router::batcher::{BatchSettings, EmbeddingService};
use switchboard_router::classifier::Classifier;
use switchboard_router::conversation::{Turn, routing_text};
use switchboard_router::embedder::{BertEmbedder, Embed};
use switchboard_router::heads::Heads;

const WARMUP: usize = 5;
const SAMPLES: usize = 60;
const CONCURRENT_CALLERS: usize = 8;
const THROUGHPUT_RUN: Duration = Duration::from_secs(8);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 and p99 in milliseconds of `SAMPLES` calls after a warm-up; each call gets its number.
fn time(mut call: impl FnMut(usize)) -> (f64, f64) {
    for i in 0..WARMUP {
        call(i);
    }
    let mut millis: Vec<f64> = (WARMUP..WARMUP + SAMPLES)
        .map(|i| {
            let started = Instant::now();
            call(i);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    millis.sort_by(f64::total_cmp);
    (percentile(&millis, 0.5), percentile(&millis, 0.99))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_dir = PathBuf::from(args.next().context("MODEL_DIR")?);
    let texts: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(
        args.next().context("TEXTS_JSON")?,
    )?)?;

    let embedder = Arc::new(BertEmbedder::load(&model_dir)?);
    let service = Arc::new(EmbeddingService::start(
        embedder.clone() as Arc<dyn Embed>,
        BatchSettings::default(),
    )?);
    let classifier = Arc::new(Classifier::new(service, Heads::shipped(), Vec::new())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut results = serde_json::Map::new();
    for (tokens, text) in &texts {
        let embedded_tokens = embedder.embed(&[text.as_str()])?.tokens[0];
        let (embed_p50, embed_p99) = time(|_| {
            embedder.embed(&[text.as_str()]).expect("embeds");
        });
        let turns = [Turn::user(text.clone())];
        let routed_tokens = embedder.embed(&[routing_text(&turns).as_str()])?.tokens[0];
        // A number in front makes every request new to the recent embeddings (one or two
        // tokens more).
        let (score_p50, score_p99) = time(|i| {
            let turns = [Turn::user(format!("{i} {text}"))];
            runtime
                .block_on(classifier.classify(&turns))
                .expect("scores");
        });
        let (repeat_p50, repeat_p99) = time(|_| {
            runtime
                .block_on(classifier.classify(&turns))
                .expect("scores");
        });
        results.insert(
            tokens.clone(),
            serde_json::json!({
                "embedded_tokens": embedded_tokens,
                "routing_text_tokens": routed_tokens,
                "embed_p50_ms": embed_p50, "embed_p99_ms": embed_p99,
                "score_p50_ms": score_p50, "score_p99_ms": score_p99,
                "repeat_p50_ms": repeat_p50, "repeat_p99_ms": repeat_p99,
            }),
        );
    }

    // Throughput: callers that score the 64-token request back to back.
    let text = texts.get("64").context("a 64-token text")?.clone();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let callers: Vec<_> = (0..CONCURRENT_CALLERS)
            .map(|_| {
                let classifier = classifier.clone();
                let done = done.clone();
                let text = text.clone();
                tokio::spawn(async move {
                    while started.elapsed() < THROUGHPUT_RUN {
                        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let turns = [Turn::user(format!("{n} {text}"))];
                        classifier.classify(&turns).await.expect("scores");
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.expect("caller finishes");
        }
    });
    let per_second =
        done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    results.insert(
        "throughput_8_callers_64_tokens_per_s".to_owned(),
        serde_json::json!(per_second),
    );
    println!("{}", serde_json::Value::Object(results));
    Ok(())
}
