//! Shared by the tests that read the real SmolLM2 GGUF: where it is, and the model loaded.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::PathBuf;

use candle_core::quantized::gguf_file::Content;
use switchboard_local_engine::ModelSettings;
use switchboard_local_engine::model::Model;

/// `$SWITCHBOARD_TEST_GGUF`, else the default model directory that `switchboard models fetch`
/// fills (./test.sh runs it first).
pub fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_TEST_GGUF") {
        return path.into();
    }
    let home = std::env::var_os("SWITCHBOARD_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("switchboard"))
        })
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/switchboard")))
        .expect("HOME is set");
    let path = home.join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `switchboard models fetch` (./test.sh does)",
        path.display()
    );
    path
}

/// The model alone, without the engine's queue and thread, keeping no finished sequences.
pub fn load_model() -> Model {
    load_model_with(ModelSettings {
        prefix_cache_bytes: 0,
        ..ModelSettings::default()
    })
}

pub fn load_model_with(settings: ModelSettings) -> Model {
    let mut file = std::fs::File::open(model_path()).unwrap();
    let content = Content::read(&mut file).unwrap();
    Model::load(content, &mut file, settings).unwrap()
}
