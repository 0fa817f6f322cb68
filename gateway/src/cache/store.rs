//! The answers, in memory: bounded by bytes (least recently used out first), by a count per
//! tenant, and by age; written through to a sled tree so that a restart keeps them.
//!
//! The semantic tier's questions are kept as unit vectors twice: in 8 bits per dimension for a
//! flat scan of a context's entries, and in f32 to re-rank the scan's best few exactly. A
//! context holds one scope's entries with one system prompt, history, model and parameters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchboard_router::embedder::cosine;
use switchboard_router::same_question::Gist;

use super::key::{Digest32, RequestKey};

/// An answer that can be served again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The assistant's text.
    pub content: String,
    /// The model that wrote it.
    pub model: String,
    /// What it took then: a hit's savings are what the reference model would charge for it.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Unix milliseconds when it was written.
    pub created_ms: u64,
}

/// How an answer was found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Exact(Arc<CachedAnswer>),
    /// A question of the same context close enough in meaning, whose words agree.
    Semantic {
        answer: Arc<CachedAnswer>,
        similarity: f32,
    },
}

/// The bounds of a store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_entries_per_tenant: usize,
    pub ttl_ms: u64,
}

/// The semantic tier's view of an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Question {
    context: Digest32,
    text: String,
    /// Unit vector.
    vector: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    tenant: String,
    scope: String,
    answer: Arc<CachedAnswer>,
    question: Option<Question>,
    expires_ms: u64,
}

impl Entry {
    /// Memory it holds, roughly: its texts, its vectors, the bookkeeping.
    fn bytes(&self) -> usize {
        const OVERHEAD: usize = 256;
        let question = self.question.as_ref().map_or(0, |q| {
            q.text.len() + q.vector.len() * (std::mem::size_of::<f32>() + 1)
        });
        OVERHEAD + self.tenant.len() + self.scope.len() + self.answer.content.len() + question
    }
}

/// A context's questions, for the scan: 8-bit codes, one row per entry.
#[derive(Debug, Default)]
struct Context {
    keys: Vec<Digest32>,
    codes: Vec<i8>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Digest32, (Entry, u64)>,
    /// Use order: tick → key, oldest first; per tenant too.
    recent: BTreeMap<u64, Digest32>,
    recent_by_tenant: HashMap<String, BTreeMap<u64, Digest32>>,
    contexts: HashMap<(String, Digest32), Context>,
    bytes: usize,
    tick: u64,
    evictions: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    limits: Limits,
    /// Where entries persist; `None` keeps them in memory only.
    disk: Option<sled::Tree>,
}

/// What a store holds, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub entries: usize,
    pub bytes: usize,
    pub evictions: u64,
}

/// How many of a scan's best are re-ranked with their exact vectors.
const RERANK: usize = 8;

fn quantize(vector: &[f32]) -> impl Iterator<Item = i8> + '_ {
    vector
        .iter()
        .map(|x| (x * 127.0).round().clamp(-127.0, 127.0) as i8)
}

/// The dot product of two 8-bit vectors, in sixteen lanes that the compiler turns into SIMD.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 16;
    let mut lanes = [0i32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += i32::from(x[lane]) * i32::from(y[lane]);
        }
    }
    lanes.iter().sum::<i32>() + tail
}

/// The [`RERANK`] highest scores of a scan, best first.
fn best_few(scores: impl Iterator<Item = (i32, Digest32)>) -> [Option<(i32, Digest32)>; RERANK] {
    let mut best = [None; RERANK];
    for (score, key) in scores {
        if best[RERANK - 1].is_some_and(|(lowest, _)| score <= lowest) {
            continue;
        }
        let at = best
            .iter()
            .position(|b| b.is_none_or(|(s, _)| score > s))
            .unwrap_or(RERANK - 1);
        best[at..].rotate_right(1);
        best[at] = Some((score, key));
    }
    best
}

impl Store {
    /// A store bounded by `limits`, with the entries `disk` holds that have not expired at
    /// `now_ms` (the newest first, while they fit).
    pub fn open(limits: Limits, disk: Option<sled::Tree>, now_ms: u64) -> Self {
        let store = Self {
            inner: Mutex::new(Inner::default()),
            limits,
            disk,
        };
        let Some(disk) = &store.disk else {
            return store;
        };
        let mut kept: Vec<(Digest32, Entry)> = disk
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, value)| {
                let key: Digest32 = key.as_ref().try_into().ok()?;
                let entry: Entry = serde_json::from_slice(&value).ok()?;
                Some((key, entry))
            })
            .collect();
        kept.sort_by_key(|(_, entry)| entry.answer.created_ms);
        let mut inner = store.lock();
        for (key, entry) in kept {
            if entry.expires_ms > now_ms {
                store.insert_entry(&mut inner, key, entry);
            } else {
                let _ = disk.remove(key);
            }
        }
        drop(inner);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer filed under `key` exactly, else (given the question's unit `vector`) the
    /// closest question of its context at `threshold` or above whose words agree with it.
    pub fn find(
        &self,
        key: &RequestKey,
        vector: Option<&[f32]>,
        threshold: f32,
        now_ms: u64,
    ) -> Option<Found> {
        let mut inner = self.lock();
        if let Some(answer) = self.touch(&mut inner, &key.exact, now_ms) {
            return Some(Found::Exact(answer));
        }
        let (semantic, vector) = (key.semantic.as_ref()?, vector?);
        let context = inner.contexts.get(&(key.scope.clone(), semantic.context))?;
        let dims = vector.len();
        if dims == 0 || context.codes.len() != context.keys.len() * dims {
            return None;
        }
        let probe: Vec<i8> = quantize(vector).collect();
        let rows = context.codes.chunks_exact(dims).zip(&context.keys);
        let scanned = best_few(rows.map(|(row, key)| (dot_i8(row, &probe), *key)));
        let asked = Gist::of(&semantic.question);
        let mut best: Option<(f32, Digest32)> = None;
        for (_, candidate) in scanned.into_iter().flatten() {
            let Some((entry, _)) = inner.entries.get(&candidate) else {
                continue;
            };
            let Some(question) = &entry.question else {
                continue;
            };
            let similarity = cosine(vector, &question.vector);
            let better = best.is_none_or(|(b, _)| similarity > b);
            if similarity >= threshold
                && better
                && entry.expires_ms > now_ms
                && Gist::of(&question.text).agrees_with(&asked).is_ok()
            {
                best = Some((similarity, candidate));
            }
        }
        let (similarity, found) = best?;
        let answer = self.touch(&mut inner, &found, now_ms)?;
        Some(Found::Semantic { answer, similarity })
    }

    /// Files `answer` under `key` (and, with the question's unit `vector`, for the semantic
    /// tier) for `tenant`, replacing what was there.
    pub fn insert(
        &self,
        tenant: &str,
        key: &RequestKey,
        vector: Option<Vec<f32>>,
        answer: CachedAnswer,
        now_ms: u64,
    ) {
        let question = key
            .semantic
            .as_ref()
            .zip(vector)
            .map(|(s, vector)| Question {
                context: s.context,
                text: s.question.clone(),
                vector,
            });
        let entry = Entry {
            tenant: tenant.to_owned(),
            scope: key.scope.clone(),
            answer: Arc::new(answer),
            question,
            expires_ms: now_ms.saturating_add(self.limits.ttl_ms),
        };
        if entry.bytes() > self.limits.max_bytes {
            return;
        }
        if let (Some(disk), Ok(value)) = (&self.disk, serde_json::to_vec(&entry)) {
            let _ = disk.insert(key.exact, value);
        }
        let mut inner = self.lock();
        self.insert_entry(&mut inner, key.exact, entry);
    }

    /// Removes every entry of `tenant`; returns how many there were.
    pub fn clear_tenant(&self, tenant: &str) -> usize {
        let mut inner = self.lock();
        let keys: Vec<Digest32> = inner
            .recent_by_tenant
            .get(tenant)
            .map(|order| order.values().copied().collect())
            .unwrap_or_default();
        for key in &keys {
            self.remove(&mut inner, key);
        }
        keys.len()
    }

    pub fn occupancy(&self) -> Occupancy {
        let inner = self.lock();
        Occupancy {
            entries: inner.entries.len(),
            bytes: inner.bytes,
            evictions: inner.evictions,
        }
    }

    /// The answer under `key`, marked as used now; an expired one is removed.
    fn touch(&self, inner: &mut Inner, key: &Digest32, now_ms: u64) -> Option<Arc<CachedAnswer>> {
        let (entry, used) = inner.entries.get(key)?;
        if entry.expires_ms <= now_ms {
            self.remove(inner, key);
            return None;
        }
        let (answer, tenant, old) = (entry.answer.clone(), entry.tenant.clone(), *used);
        inner.tick += 1;
        let tick = inner.tick;
        inner.recent.remove(&old);
        inner.recent.insert(tick, *key);
        if let Some(order) = inner.recent_by_tenant.get_mut(&tenant) {
            order.remove(&old);
            order.insert(tick, *key);
        }
        if let Some((_, used)) = inner.entries.get_mut(key) {
            *used = tick;
        }
        Some(answer)
    }

    fn insert_entry(&self, inner: &mut Inner, key: Digest32, entry: Entry) {
        self.remove(inner, &key);
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += entry.bytes();
        inner.recent.insert(tick, key);
        let order = inner
            .recent_by_tenant
            .entry(entry.tenant.clone())
            .or_default();
        order.insert(tick, key);
        let over_cap = order.len() > self.limits.max_entries_per_tenant;
        if let Some(question) = &entry.question {
            let context = inner
                .contexts
                .entry((entry.scope.clone(), question.context))
                .or_default();
            context.keys.push(key);
            context.codes.extend(quantize(&question.vector));
        }
        let tenant = entry.tenant.clone();
        inner.entries.insert(key, (entry, tick));
        if over_cap {
            let oldest = inner
                .recent_by_tenant
                .get(&tenant)
                .and_then(|order| order.values().next().copied());
            if let Some(oldest) = oldest {
                self.evict(inner, &oldest);
            }
        }
        while inner.bytes > self.limits.max_bytes {
            let Some(oldest) = inner.recent.values().next().copied() else {
                break;
            };
            self.evict(inner, &oldest);
        }
    }

    fn evict(&self, inner: &mut Inner, key: &Digest32) {
        if self.remove(inner, key) {
            inner.evictions += 1;
        }
    }

    /// Forgets the entry under `key`, in memory and on disk.
    fn remove(&self, inner: &mut Inner, key: &Digest32) -> bool {
        let Some((entry, used)) = inner.entries.remove(key) else {
            return false;
        };
        inner.bytes -= entry.bytes();
        inner.recent.remove(&used);
        if let Some(order) = inner.recent_by_tenant.get_mut(&entry.tenant) {
            order.remove(&used);
            if order.is_empty() {
                inner.recent_by_tenant.remove(&entry.tenant);
            }
        }
        if let Some(question) = &entry.question {
            let scope_context = (entry.scope.clone(), question.context);
            if let Some(context) = inner.contexts.get_mut(&scope_context) {
                let dims = question.vector.len();
                if let Some(row) = context.keys.iter().position(|k| k == key) {
                    context.keys.swap_remove(row);
                    let last = context.keys.len();
                    if row != last {
                        let (head, tail) = context.codes.split_at_mut(last * dims);
                        head[row * dims..(row + 1) * dims].copy_from_slice(&tail[..dims]);
                    }
                    context.codes.truncate(last * dims);
                }
                if context.keys.is_empty() {
                    inner.contexts.remove(&scope_context);
                }
            }
        }
        if let Some(disk) = &self.disk {
            let _ = disk.remove(key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::ChatCompletionRequest;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries_per_tenant: 100,
        ttl_ms: 60_000,
    };

    fn key(text: &str, scope: &str) -> RequestKey {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}]
        }))
        .unwrap();
        RequestKey::of(&request, "smollm2", scope)
    }

    fn answer(content: &str) -> CachedAnswer {
        CachedAnswer {
            content: content.to_owned(),
            model: "smollm2".to_owned(),
            prompt_tokens: 10,
            completion_tokens: 5,
            created_ms: 0,
        }
    }

    /// A unit vector near the axis `axis`, tilted by `tilt` towards the next one.
    fn unit(axis: usize, tilt: f32) -> Vec<f32> {
        let mut v = [0.0; 8];
        v[axis] = 1.0;
        v[(axis + 1) % 8] = tilt;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn exact_and_semantic_hits_within_a_scope_and_context_only() {
        let store = Store::open(LIMITS, None, 0);
        let asked = key("how do I reset my VPN password", "acme");
        store.insert(
            "acme",
            &asked,
            Some(unit(0, 0.0)),
            answer("Open the portal."),
            0,
        );

        assert_eq!(
            store.find(&asked, Some(&unit(0, 0.0)), 0.95, 1),
            Some(Found::Exact(Arc::new(answer("Open the portal."))))
        );
        let reworded = key("how can I reset my VPN password", "acme");
        let Some(Found::Semantic { similarity, .. }) =
            store.find(&reworded, Some(&unit(0, 0.1)), 0.95, 1)
        else {
            panic!("a close question is a semantic hit");
        };
        assert!(similarity > 0.99);
        // Not as close as asked for.
        assert_eq!(store.find(&reworded, Some(&unit(0, 0.5)), 0.95, 1), None);
        // Close, but its words disagree.
        let negated = key("how do I not reset my VPN password", "acme");
        assert_eq!(store.find(&negated, Some(&unit(0, 0.0)), 0.95, 1), None);
        // Another tenant sees nothing, exact or semantic.
        let elsewhere = key("how do I reset my VPN password", "globex");
        assert_eq!(store.find(&elsewhere, Some(&unit(0, 0.0)), 0.5, 1), None);
        // Expired.
        assert_eq!(store.find(&asked, Some(&unit(0, 0.0)), 0.95, 60_001), None);
        assert_eq!(store.occupancy().entries, 0);
    }

    #[test]
    fn bounds_evict_the_least_recently_used() {
        let limits = Limits {
            max_entries_per_tenant: 2,
            ..LIMITS
        };
        let store = Store::open(limits, None, 0);
        let keys: Vec<RequestKey> = (0..3).map(|i| key(&format!("q{i}"), "acme")).collect();
        store.insert("acme", &keys[0], Some(unit(0, 0.0)), answer("a0"), 0);
        store.insert("acme", &keys[1], Some(unit(1, 0.0)), answer("a1"), 0);
        // q0 used since: q1 is the least recently used.
        assert!(store.find(&keys[0], None, 0.95, 1).is_some());
        store.insert("acme", &keys[2], Some(unit(2, 0.0)), answer("a2"), 1);
        assert!(store.find(&keys[1], None, 0.95, 2).is_none());
        assert!(store.find(&keys[0], None, 0.95, 2).is_some());
        // The last semantic row moved into the removed one's place.
        let probe = key("q2 please", "acme");
        let Some(Found::Semantic { answer: found, .. }) =
            store.find(&probe, Some(&unit(2, 0.0)), 0.95, 2)
        else {
            panic!("q2 is found by meaning");
        };
        assert_eq!(found.content, "a2");
        let occupancy = store.occupancy();
        assert_eq!((occupancy.entries, occupancy.evictions), (2, 1));

        let tiny = Store::open(
            Limits {
                max_bytes: 700,
                ..LIMITS
            },
            None,
            0,
        );
        for (i, key) in keys.iter().enumerate() {
            tiny.insert("acme", key, None, answer(&"x".repeat(200)), i as u64);
        }
        assert!(tiny.occupancy().bytes <= 700);
        assert!(tiny.find(&keys[2], None, 0.95, 3).is_some());
        assert!(tiny.find(&keys[0], None, 0.95, 3).is_none());
        assert_eq!(store.clear_tenant("acme"), 2);
        assert_eq!(store.occupancy().entries, 0);
    }

    #[test]
    fn a_reopened_store_keeps_what_has_not_expired() {
        let dir = std::env::temp_dir().join(format!("switchboard-cache-{}", fastrand::u64(..)));
        let tree = || sled::open(&dir).unwrap().open_tree("cache").unwrap();
        let kept = key("kept", "acme");
        let old = key("old", "acme");
        {
            let store = Store::open(LIMITS, Some(tree()), 0);
            store.insert("acme", &kept, Some(unit(0, 0.0)), answer("k"), 30_000);
            store.insert("acme", &old, None, answer("o"), 0);
        }
        let store = Store::open(LIMITS, Some(tree()), 70_000);
        assert!(store.find(&old, None, 0.95, 70_000).is_none());
        let reworded = key("kept", "acme");
        assert!(matches!(
            store.find(&reworded, Some(&unit(0, 0.0)), 0.95, 70_000),
            Some(Found::Exact(_))
        ));
        assert_eq!(store.occupancy().entries, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
