//! Keys and values of finished sequences, kept so that a new prompt sharing a prefix with one of
//! them (enterprise traffic repeats the same long system prompt) skips that prefix's prefill.
//!
//! Entries are whole sequences, found by the longest common prefix with the new prompt and
//! evicted least recently used first once their memory passes the bound. A sequence that
//! extends an entry replaces it (the entry adds nothing), and one that an entry already extends
//! is not stored twice.

/// What the cache keeps per sequence: the keys and values of its first `len()` tokens.
pub trait Prefixes {
    /// Heap memory held.
    fn bytes(&self) -> usize;
    /// A copy of the first `len` positions.
    fn prefix(&self, len: usize) -> Self;
    /// Lets go of memory held beyond the positions (before it is kept for long).
    fn shrink_to_fit(&mut self);
}

struct Entry<C> {
    tokens: Vec<u32>,
    cache: C,
    last_used: u64,
}

pub struct PrefixCache<C> {
    entries: Vec<Entry<C>>,
    capacity_bytes: usize,
    bytes: usize,
    clock: u64,
}

impl<C: Prefixes> PrefixCache<C> {
    /// A cache holding at most `capacity_bytes` of keys and values (0: none).
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity_bytes,
            bytes: 0,
            clock: 0,
        }
    }

    /// Memory held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest prefix of `tokens` (at most `limit` of them) that an entry holds, as a copy
    /// of its keys and values; `None` when no entry shares a first token.
    pub fn lookup(&mut self, tokens: &[u32], limit: usize) -> Option<(usize, C)> {
        let (index, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, entry)| (i, common_prefix(&entry.tokens, tokens).min(limit)))
            .max_by_key(|&(i, shared)| (shared, self.entries[i].last_used))?;
        if shared == 0 {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[index];
        entry.last_used = self.clock;
        Some((shared, entry.cache.prefix(shared)))
    }

    /// Keeps a finished sequence's `cache` of `tokens` (shrunk to its positions), evicting the
    /// least recently used entries beyond the memory bound.
    pub fn insert(&mut self, tokens: Vec<u32>, mut cache: C) {
        if tokens.is_empty() || self.capacity_bytes == 0 {
            return;
        }
        self.clock += 1;
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
        {
            entry.last_used = self.clock;
            return;
        }
        cache.shrink_to_fit();
        let size = cache.bytes();
        if size > self.capacity_bytes {
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if tokens.starts_with(&self.entries[i].tokens) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        while self.bytes + size > self.capacity_bytes {
            let oldest = (0..self.entries.len())
                .min_by_key(|&i| self.entries[i].last_used)
                .expect("an entry while over the bound");
            self.remove(oldest);
        }
        self.bytes += size;
        self.entries.push(Entry {
            tokens,
            cache,
            last_used: self.clock,
        });
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn remove(&mut self, index: usize) {
        let entry = self.entries.swap_remove(index);
        self.bytes -= entry.cache.bytes();
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in cache: the tokens themselves, four bytes each.
    #[derive(Debug, Clone, PartialEq)]
    struct Tokens(Vec<u32>);

    impl Prefixes for Tokens {
        fn bytes(&self) -> usize {
            self.0.len() * 4
        }
        fn prefix(&self, len: usize) -> Self {
            Tokens(self.0[..len].to_vec())
        }
        fn shrink_to_fit(&mut self) {
            self.0.shrink_to_fit();
        }
    }

    fn insert(cache: &mut PrefixCache<Tokens>, tokens: &[u32]) {
        cache.insert(tokens.to_vec(), Tokens(tokens.to_vec()));
    }

    #[test]
    fn the_longest_shared_prefix_is_found_and_copied() {
        let mut cache = PrefixCache::new(1 << 20);
        insert(&mut cache, &[1, 2, 3, 4]);
        insert(&mut cache, &[1, 2, 9, 9, 9]);
        assert_eq!(
            cache.lookup(&[1, 2, 9, 9, 5], usize::MAX),
            Some((4, Tokens(vec![1, 2, 9, 9])))
        );
        assert_eq!(
            cache.lookup(&[1, 2, 3, 4, 5], 3),
            Some((3, Tokens(vec![1, 2, 3]))),
            "no further than the limit"
        );
        assert_eq!(cache.lookup(&[7, 1, 2], usize::MAX), None);
        assert_eq!(cache.len(), 2, "lookups copy, entries stay");
    }

    #[test]
    fn memory_stays_bounded_and_the_least_recently_used_goes_first() {
        // Room for three entries of 4 tokens.
        let mut cache = PrefixCache::new(48);
        insert(&mut cache, &[1, 0, 0, 0]);
        insert(&mut cache, &[2, 0, 0, 0]);
        insert(&mut cache, &[3, 0, 0, 0]);
        assert!(cache.lookup(&[1, 0], usize::MAX).is_some()); // 1 is now the most recent
        insert(&mut cache, &[4, 0, 0, 0]);
        assert_eq!(cache.bytes(), 48);
        assert!(cache.lookup(&[2], usize::MAX).is_none(), "2 was the oldest");
        for first in [1, 3, 4] {
            assert!(cache.lookup(&[first], usize::MAX).is_some());
        }
        insert(&mut cache, &[5; 20]);
        assert!(
            cache.lookup(&[5], usize::MAX).is_none(),
            "larger than the bound"
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn extensions_replace_their_prefixes_and_prefixes_are_not_stored_twice() {
        let mut cache = PrefixCache::new(1 << 20);
        insert(&mut cache, &[1, 2]);
        insert(&mut cache, &[1, 2, 3]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 12);
        insert(&mut cache, &[1, 2]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.lookup(&[1, 2, 3], usize::MAX).unwrap().0, 3);
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
}
