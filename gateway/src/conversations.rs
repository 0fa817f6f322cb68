//! Conversations that escalated, so that a thread stays on its tier instead of switching
//! models back and forth. A conversation is named by the client (`x-switchboard-conversation`)
//! or, failing that, by a hash of its first system and user messages, which every later request
//! of the thread repeats. Kept by the shared state (`shared_state`: this map, or Redis for a
//! fleet) for the policy's `sticky_conversations.ttl` after its last request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::api::{ChatMessage, Role};

/// Beyond this many live conversations, the oldest half is forgotten.
const CAPACITY: usize = 100_000;

/// A conversation's identity, its tenant's included: the same on every replica of a fleet
/// (SHA-256, not the standard library's hasher, whose output may change between releases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationKey(u64);

/// Feeds length-prefixed parts to a SHA-256, so that no two sequences of parts collide.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn part(&mut self, part: &[u8]) {
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part);
    }

    fn finish(self) -> ConversationKey {
        let digest = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        ConversationKey(u64::from_le_bytes(first))
    }
}

impl ConversationKey {
    /// The conversation named `named` by the client, else the one these messages open.
    pub fn of(tenant: &str, named: Option<&[u8]>, messages: &[ChatMessage]) -> Option<Self> {
        let mut hasher = KeyHasher(Sha256::new());
        hasher.part(tenant.as_bytes());
        if let Some(name) = named {
            hasher.part(b"named");
            hasher.part(name);
            return Some(hasher.finish());
        }
        let text = |role: Role| {
            messages
                .iter()
                .find(|m| m.role == role)
                .and_then(|m| m.content.as_ref())
                .map(|c| c.text())
        };
        let first_user = text(Role::User)?;
        hasher.part(b"opening");
        let system = text(Role::System);
        // An absent system prompt and an empty one differ.
        hasher.part(&[u8::from(system.is_some())]);
        hasher.part(system.unwrap_or_default().as_bytes());
        hasher.part(first_user.as_bytes());
        Some(hasher.finish())
    }

    /// The key as a number, for the fleet store's keys.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

#[derive(Default)]
pub struct Conversations {
    tiers: Mutex<HashMap<ConversationKey, (String, Instant)>>,
}

impl Conversations {
    /// The tier this conversation escalated to, if that was within its time to live.
    pub fn tier(&self, key: ConversationKey, now: Instant) -> Option<String> {
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers
            .get(&key)
            .filter(|(_, until)| *until > now)
            .map(|(tier, _)| tier.clone())
    }

    /// Keeps the conversation on `tier` for `ttl` from now.
    pub fn remember(&self, key: ConversationKey, tier: &str, ttl: Duration, now: Instant) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        if tiers.len() >= CAPACITY {
            tiers.retain(|_, (_, until)| *until > now);
        }
        if tiers.len() >= CAPACITY {
            // Still full of live ones: forget those closest to expiring.
            let mut ends: Vec<Instant> = tiers.values().map(|(_, until)| *until).collect();
            ends.sort_unstable();
            let cut = ends[ends.len() / 2];
            tiers.retain(|_, (_, until)| *until > cut);
        }
        tiers.insert(key, (tier.to_owned(), now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(json: &str) -> Vec<ChatMessage> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_thread_is_known_by_its_opening_or_its_name() {
        let none = None;
        let first = messages(
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Plan a migration"}]"#,
        );
        let later = messages(
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Plan a migration"},{"role":"assistant","content":"Sure"},{"role":"user","content":"And rollback?"}]"#,
        );
        let other = messages(r#"[{"role":"user","content":"Plan a migration"}]"#);
        let key = |t, n, m: &[ChatMessage]| ConversationKey::of(t, n, m).unwrap();
        assert_eq!(key("a", none, &first), key("a", none, &later));
        assert_ne!(key("a", none, &first), key("a", none, &other));
        assert_ne!(key("a", none, &first), key("b", none, &first));
        let named = Some(&b"thread-7"[..]);
        assert_eq!(key("a", named, &first), key("a", named, &other));
        assert_eq!(
            ConversationKey::of("a", none, &messages(r#"[{"role":"system","content":"x"}]"#)),
            None
        );
    }

    #[test]
    fn tiers_are_kept_for_their_time_to_live() {
        let conversations = Conversations::default();
        let key = ConversationKey(7);
        let now = Instant::now();
        conversations.remember(key, "frontier", Duration::from_secs(60), now);
        assert_eq!(
            conversations
                .tier(key, now + Duration::from_secs(59))
                .as_deref(),
            Some("frontier")
        );
        assert_eq!(conversations.tier(key, now + Duration::from_secs(61)), None);
        assert_eq!(conversations.tier(ConversationKey(8), now), None);
    }
}
