//! Switchboard's local engine on a GGUF model: prompt processing, decoding, time to first token,
//! aggregate decoding with concurrent streams, and a long shared system prompt the second time.
//! It writes the token ids of its prompts next to its figures, so that `bench/local_engine.py`
//! measures llama.cpp on exactly the same tokens; `bench/local_engine.sh` runs both in the same
//! run and prints the ratios.
//!
//! Usage: local_engine MODEL.gguf OUT.json

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use switchboard_local_engine::{
    Engine, EngineConfig, Event, GenerationRequest, ModelSettings, SamplingParams, Turn,
};

/// Tokens in the prompt-processing case, and generated in the decoding case.
const PROMPT_TOKENS: usize = 200;
const DECODE_TOKENS: usize = 128;
const SYSTEM_PROMPT_TOKENS: usize = 500;
const REPEATS: usize = 3;

const FILLER: &str = "Our IT help desk answers questions about laptops, VPN access, passwords, \
    printers, email and the expense system. Staff open a ticket with their employee number, a \
    short description of the problem and the urgency. ";

fn turn(role: &str, content: &str) -> Turn {
    Turn {
        role: role.to_owned(),
        content: content.to_owned(),
    }
}

/// A conversation whose rendered prompt has at least `tokens` tokens: `filler` repeated in the
/// system turn, then `question`.
fn conversation(engine: &Engine, tokens: usize, question: &str) -> anyhow::Result<Vec<Turn>> {
    let mut system = String::new();
    loop {
        let turns = vec![turn("system", &system), turn("user", question)];
        if engine.prompt_tokens(&turns)?.len() >= tokens {
            return Ok(turns);
        }
        system.push_str(FILLER);
    }
}

/// What one generation took.
struct Run {
    prompt_tokens: usize,
    first_token: Duration,
    completion_tokens: usize,
    /// From the first token to the last.
    decoding: Duration,
}

fn generate(engine: &Engine, turns: Vec<Turn>, max_tokens: usize) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut generation = engine.submit(GenerationRequest {
        turns,
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        logprobs: None,
    })?;
    let mut first_token = None;
    loop {
        match generation.events.blocking_recv() {
            Some(Event::Delta { .. }) => {
                first_token.get_or_insert_with(|| started.elapsed());
            }
            Some(Event::Done {
                completion_tokens, ..
            }) => {
                let first_token = first_token.unwrap_or_else(|| started.elapsed());
                return Ok(Run {
                    prompt_tokens: generation.prompt_tokens,
                    first_token,
                    completion_tokens,
                    decoding: started.elapsed() - first_token,
                });
            }
            Some(Event::Failed(reason)) => bail!("generation failed: {reason}"),
            None => bail!("the engine stopped"),
        }
    }
}

fn load(model: &str, settings: ModelSettings) -> anyhow::Result<Engine> {
    Ok(Engine::load(&EngineConfig {
        path: PathBuf::from(model),
        queue_capacity: 16,
        max_context: Some(2048),
        model: settings,
    })?)
}

/// `streams` generations started together: their tokens per second over the wall time, and
/// their decoding rate (the tokens after each one's first, from the first first token to the
/// last token).
fn concurrent(engine: &Engine, streams: usize) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..streams)
            .map(|i| {
                let turns = vec![turn(
                    "user",
                    &format!("Write a long story about lighthouse keeper number {i}."),
                )];
                scope.spawn(move || generate(engine, turns, DECODE_TOKENS))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("no panic"))
            .collect::<anyhow::Result<_>>()
    })?;
    let wall = started.elapsed().as_secs_f64();
    let tokens: usize = runs.iter().map(|r| r.completion_tokens).sum();
    let first = runs.iter().map(|r| r.first_token).min().unwrap_or_default();
    let last = runs
        .iter()
        .map(|r| r.first_token + r.decoding)
        .max()
        .unwrap_or_default();
    let decoded: usize = runs.iter().map(|r| r.completion_tokens - 1).sum();
    Ok((
        tokens as f64 / wall,
        decoded as f64 / (last - first).as_secs_f64(),
    ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(out)) = (args.next(), args.next()) else {
        bail!("usage: local_engine MODEL.gguf OUT.json");
    };
    let engine = load(&model, ModelSettings::default())?;
    // Cold measurements on an engine that keeps no prefixes.
    let cold_engine = load(
        &model,
        ModelSettings {
            prefix_cache_bytes: 0,
            ..ModelSettings::default()
        },
    )?;

    // Warm-up: page the weights in.
    generate(&engine, vec![turn("user", "Hi")], 4)?;
    generate(&cold_engine, vec![turn("user", "Hi")], 4)?;

    let prefill_turns = conversation(&engine, PROMPT_TOKENS, "How do I reset my VPN password?")?;
    let prefill_ids = engine.prompt_tokens(&prefill_turns)?;
    let mut prefill = Vec::new();
    let mut first_token = Vec::new();
    for _ in 0..REPEATS {
        let run = generate(&cold_engine, prefill_turns.clone(), 1)?;
        prefill.push(run.prompt_tokens as f64 / run.first_token.as_secs_f64());
        first_token.push(run.first_token.as_secs_f64() * 1000.0);
    }

    let decode_turns = vec![turn(
        "user",
        "Write a long story about a lighthouse keeper and a storm.",
    )];
    let decode_ids = engine.prompt_tokens(&decode_turns)?;
    let mut decode = Vec::new();
    let mut decoded_tokens = 0;
    for _ in 0..REPEATS {
        let run = generate(&engine, decode_turns.clone(), DECODE_TOKENS)?;
        decoded_tokens = run.completion_tokens;
        decode.push((run.completion_tokens - 1) as f64 / run.decoding.as_secs_f64());
    }

    // Concurrent streams, started together: all tokens over the wall time (prompts included),
    // and the decoding rate proper, as the single-stream figure counts it: the tokens after
    // each stream's first, from the first first token to the last token. Each figure is the
    // median of REPEATS rounds of 1, 4 and 8 streams in turn (this host's speed drifts by 20%
    // within minutes, and a ratio of two lone runs drifts with it).
    let mut rounds: Vec<[(f64, f64); 3]> = Vec::new();
    for _ in 0..REPEATS {
        let mut round = [(0.0, 0.0); 3];
        for (slot, streams) in [1, 4, 8].into_iter().enumerate() {
            round[slot] = concurrent(&engine, streams)?;
        }
        rounds.push(round);
    }
    let mut aggregate = serde_json::Map::new();
    let mut aggregate_decoding = serde_json::Map::new();
    for (slot, streams) in [1, 4, 8].into_iter().enumerate() {
        let wall = median(rounds.iter().map(|r| r[slot].0).collect());
        let decoding = median(rounds.iter().map(|r| r[slot].1).collect());
        aggregate.insert(streams.to_string(), json!(wall));
        aggregate_decoding.insert(streams.to_string(), json!(decoding));
    }

    // The same long system prompt twice, with different questions.
    let cold_turns = conversation(&engine, SYSTEM_PROMPT_TOKENS, "Where is the printer?")?;
    let mut warm_turns = cold_turns.clone();
    warm_turns[1] = turn("user", "How do I file an expense?");
    let cold = generate(&cold_engine, cold_turns.clone(), 1)?;
    generate(&engine, cold_turns.clone(), 1)?;
    let warm = generate(&engine, warm_turns.clone(), 1)?;

    let figures = json!({
        "engine": "switchboard",
        "prefill_tokens": prefill_ids.len(),
        "prefill_tokens_per_s": median(prefill),
        "first_token_ms": median(first_token),
        "decode_tokens": decoded_tokens,
        "decode_tokens_per_s": median(decode),
        "aggregate_tokens_per_s": aggregate,
        "aggregate_decoding_tokens_per_s": aggregate_decoding,
        "system_prompt_tokens": cold.prompt_tokens,
        "system_prompt_first_token_ms": {
            "cold": cold.first_token.as_secs_f64() * 1000.0,
            "warm": warm.first_token.as_secs_f64() * 1000.0,
        },
        "prompts": {
            "prefill": prefill_ids,
            "decode": decode_ids,
            "system_cold": engine.prompt_tokens(&cold_turns)?,
            "system_warm": engine.prompt_tokens(&warm_turns)?,
        },
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&figures)?)
        .with_context(|| format!("cannot write {out}"))?;
    Ok(())
}
