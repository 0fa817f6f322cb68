//! Truncated and corrupted GGUF files: loading one ends with an error (or, where the damage
//! missed everything that matters, a model), never a panic. Cases are cuts anywhere in the
//! header, the metadata and the first tensors, and byte flips in the header and metadata,
//! where lengths, counts, types and offsets live.

mod common;

use std::io::Write;

use proptest::prelude::*;
use switchboard_local_engine::{Engine, EngineConfig};

use common::model_path;

/// Loads `bytes` as a model file; fails the case on a panic.
fn load(bytes: &[u8], dir: &std::path::Path) -> Result<(), TestCaseError> {
    let path = dir.join(format!("{:016x}.gguf", fastrand::u64(..)));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap();
    let config = EngineConfig {
        path: path.clone(),
        queue_capacity: 1,
        max_context: Some(256),
        model: Default::default(),
    };
    let loaded = std::panic::catch_unwind(|| Engine::load(&config).map(drop));
    std::fs::remove_file(&path).unwrap();
    prop_assert!(loaded.is_ok(), "loading panicked");
    Ok(())
}

#[test]
fn damaged_model_files_are_refused_without_a_panic() {
    let original = std::fs::read(model_path()).unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-gguf");
    std::fs::create_dir_all(&dir).unwrap();
    // The header and the metadata (the vocabulary is most of it) fit in the first 2 MiB.
    let metadata = 2 << 20;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let truncated = (0..metadata + (4 << 20)).prop_map(|cut| (cut, None));
    // Half the flips hit the first 64 KiB: the header, the first keys and the vocabulary's
    // array length.
    let at = prop_oneof![0usize..1 << 16, 0usize..metadata];
    let flipped = (at, any::<u8>()).prop_map(|(at, byte)| (usize::MAX, Some((at, byte))));
    runner
        .run(&prop_oneof![truncated, flipped], |(cut, flip)| {
            let mut bytes = original[..cut.min(original.len())].to_vec();
            if let Some((at, byte)) = flip {
                bytes[at] ^= byte | 1;
            }
            load(&bytes, &dir)
        })
        .unwrap();
}
