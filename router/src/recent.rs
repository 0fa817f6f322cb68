//! The embeddings of recent routing texts. Help-desk traffic repeats itself ("how do I reset my
//! password" arrives many times a day, word for word), and a repeat needs no forward pass.
//!
//! Two generations stand in for a least-recently-used list: lookups search the young generation,
//! then the old one (moving a hit to the young); when the young one is full it becomes the old
//! one and the previous old one is dropped. Every operation is O(1), at most `capacity` texts are
//! kept, and a text used within the last `capacity / 2` insertions is never evicted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct Remembered {
    pub vector: Vec<f32>,
    pub tokens: usize,
}

pub struct RecentEmbeddings {
    generations: Mutex<Generations>,
    half: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Remembered>,
    old: HashMap<String, Remembered>,
}

impl RecentEmbeddings {
    /// Keeps up to `capacity` texts (0 turns remembering off).
    pub fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::new(Generations::default()),
            half: capacity / 2,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, text: &str) -> Option<Remembered> {
        let found = if self.half == 0 {
            None
        } else {
            let mut generations = self.lock();
            match generations.young.get(text) {
                Some(found) => Some(found.clone()),
                None => {
                    let found = generations.old.remove(text);
                    if let Some(found) = &found {
                        generations.insert(text.to_owned(), found.clone(), self.half);
                    }
                    found
                }
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, text: String, remembered: Remembered) {
        if self.half > 0 {
            self.lock().insert(text, remembered, self.half);
        }
    }

    /// Lookups so far that found their text, and that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps stay consistent even if a holder panicked: every update is one insert.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Generations {
    fn insert(&mut self, text: String, remembered: Remembered, half: usize) {
        if self.young.len() >= half && !self.young.contains_key(&text) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(text, remembered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(x: f32) -> Remembered {
        Remembered {
            vector: vec![x],
            tokens: 1,
        }
    }

    #[test]
    fn repeats_are_found_and_counted() {
        let recent = RecentEmbeddings::new(8);
        assert!(recent.get("a").is_none());
        recent.insert("a".into(), remembered(1.0));
        assert_eq!(recent.get("a").unwrap().vector, vec![1.0]);
        assert_eq!(recent.hits_and_misses(), (1, 1));
    }

    #[test]
    fn memory_stays_bounded_and_recent_use_protects_a_text() {
        let recent = RecentEmbeddings::new(4);
        recent.insert("keep".into(), remembered(0.0));
        for i in 0..100 {
            recent.insert(format!("t{i}"), remembered(i as f32));
            // Used after every insertion: never older than two insertions.
            assert!(recent.get("keep").is_some(), "evicted after t{i}");
            let generations = recent.lock();
            assert!(generations.young.len() + generations.old.len() <= 4);
        }
        assert!(recent.get("t0").is_none());
        assert!(recent.get("t99").is_some());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let recent = RecentEmbeddings::new(0);
        recent.insert("a".into(), remembered(1.0));
        assert!(recent.get("a").is_none());
    }
}
