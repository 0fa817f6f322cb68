//! The semantic cache's pair set (`router/data/cache_pairs.jsonl`) scored with the real
//! all-MiniLM-L6-v2, as the cache scores it: an exact repeat is always served, a negation or
//! another number never (at any threshold the curve reports, once the words' guard has read
//! them), and at the shipped threshold almost no near miss of any kind.

#[path = "../../router/tests/common/mod.rs"]
mod common;

use std::path::Path;

use switchboard_router::embedder::BertEmbedder;
use switchboard_router::same_question::DEFAULT_SIMILARITY;
use switchboard_router_train::cache_pairs::{self, Pair, Scored, rates};

#[test]
fn near_misses_are_refused_and_repeats_served() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/data/cache_pairs.jsonl");
    let pairs = cache_pairs::load(&file).unwrap();
    assert!(pairs.len() >= 600, "{} pairs", pairs.len());
    let embedder = BertEmbedder::load(&common::model_dir()).unwrap();
    let scored = cache_pairs::score(&pairs, &embedder).unwrap();
    println!(
        "{}",
        cache_pairs::report(&scored, None, &[0.80, 0.85, 0.90, DEFAULT_SIMILARITY])
    );

    for split in ["dev", "test"] {
        let chosen: Vec<&Scored> = scored.iter().filter(|s| s.pair.split == split).collect();
        for threshold in [0.80, 0.85, 0.90, DEFAULT_SIMILARITY] {
            let guarded = rates(&chosen, threshold, true);
            for kind in ["negation", "number"] {
                assert_eq!(
                    guarded.false_hits_by_kind[kind], 0.0,
                    "{split} {kind} at {threshold}"
                );
            }
            // The guard only ever refuses.
            let bare = rates(&chosen, threshold, false);
            assert!(guarded.paraphrases_hit <= bare.paraphrases_hit);
            assert!(guarded.false_hits <= bare.false_hits);
        }
        let shipped = rates(&chosen, DEFAULT_SIMILARITY, true);
        assert!(shipped.false_hits <= 0.01, "{split}: {shipped:?}");
    }

    // A question asked again, word for word, is always served.
    let repeats: Vec<Pair> = pairs
        .iter()
        .map(|p| Pair {
            b: p.a.clone(),
            ..p.clone()
        })
        .collect();
    let repeated = cache_pairs::score(&repeats, &embedder).unwrap();
    let missed: Vec<_> = repeated
        .iter()
        .filter(|s| !s.hits(DEFAULT_SIMILARITY, true))
        .map(|s| (s.similarity, s.words, &s.pair.a))
        .collect();
    assert!(missed.is_empty(), "{missed:?}");
}
