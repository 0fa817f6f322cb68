//! The response cache's lookup beside the embedding the router already computes: one tenant's
//! context filled with 10,000 questions (384-dimension unit vectors, as all-MiniLM-L6-v2 gives),
//! then lookups of questions near a stored one (a semantic hit: the 8-bit scan, the exact
//! re-rank of its best, the words' guard) and far from all (a miss). The peer is the plain
//! approach in the same run: every stored f32 vector compared exactly.
//!
//! Usage: cache_lookup [ENTRIES]

use std::time::Instant;

use serde_json::json;
use switchboard_gateway::api::ChatCompletionRequest;
use switchboard_gateway::cache::key::RequestKey;
use switchboard_gateway::cache::store::{CachedAnswer, Limits, Store};
use switchboard_router::embedder::cosine;

const DIMENSIONS: usize = 384;
const LOOKUPS: usize = 2000;

fn unit(seed: &mut u64) -> Vec<f32> {
    let mut next = || {
        // xorshift: reproducible without a dependency.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let v: Vec<f32> = (0..DIMENSIONS).map(|_| next()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn key(text: &str) -> RequestKey {
    let request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}]
    }))
    .expect("a valid request");
    RequestKey::of(&request, "smollm2", "acme")
}

fn percentiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let limits = Limits {
        max_bytes: 1 << 30,
        max_entries_per_tenant: entries,
        ttl_ms: u64::MAX / 2,
    };
    let store = Store::open(limits, None, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut vectors = Vec::with_capacity(entries);
    for i in 0..entries {
        let vector = unit(&mut seed);
        let answer = CachedAnswer {
            content: format!("answer {i}"),
            model: "smollm2".to_owned(),
            prompt_tokens: 20,
            completion_tokens: 40,
            created_ms: 0,
        };
        let question = format!("how do I reset the password of system {i}");
        store.insert("acme", &key(&question), Some(vector.clone()), answer, 0);
        vectors.push(vector);
    }

    let mut near = Vec::with_capacity(LOOKUPS);
    let mut far = Vec::with_capacity(LOOKUPS);
    let mut exact_scan = Vec::with_capacity(LOOKUPS);
    let mut hits = 0;
    for i in 0..LOOKUPS {
        let target = (i * 7919) % entries;
        // A question a little off a stored one: the same words, a nearby vector.
        let noise = unit(&mut seed);
        let probe: Vec<f32> = vectors[target]
            .iter()
            .zip(&noise)
            .map(|(v, n)| v + 0.05 * n)
            .collect();
        let norm = probe.iter().map(|x| x * x).sum::<f32>().sqrt();
        let probe: Vec<f32> = probe.iter().map(|x| x / norm).collect();
        let asked = key(&format!("how do I reset the password of system {target}?"));

        let started = Instant::now();
        let found = store.find(&asked, Some(&probe), 0.95, 1);
        near.push(started.elapsed().as_secs_f64() * 1e6);
        hits += usize::from(found.is_some());

        let stranger = unit(&mut seed);
        let started = Instant::now();
        let missed = store.find(&key("something else entirely"), Some(&stranger), 0.95, 1);
        far.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(missed.is_none());

        let started = Instant::now();
        let best = vectors
            .iter()
            .map(|v| cosine(v, &probe))
            .fold(f32::MIN, f32::max);
        exact_scan.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(best > 0.9);
    }
    let (near50, near99) = percentiles(near);
    let (far50, far99) = percentiles(far);
    let (scan50, scan99) = percentiles(exact_scan);
    println!("{entries} entries in one context, {LOOKUPS} lookups each, µs p50 / p99:");
    println!(
        "  semantic hit (8-bit scan, re-rank, guard): {near50:.0} / {near99:.0}  ({hits} hits)"
    );
    println!("  miss:                                      {far50:.0} / {far99:.0}");
    println!("  peer, exact f32 scan of every vector:      {scan50:.0} / {scan99:.0}");
    println!("  ratio peer / cache at p50: {:.2}", scan50 / near50);
}
