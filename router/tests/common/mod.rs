//! What the router's integration tests share: where the embedding model is.

use std::path::PathBuf;

/// all-MiniLM-L6-v2 from `switchboard models fetch` (./test.sh runs it):
/// `$SWITCHBOARD_TEST_MINILM`, else the default model directory.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_TEST_MINILM") {
        return dir.into();
    }
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("SWITCHBOARD_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("switchboard")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/switchboard")))
        .expect("HOME is set");
    let dir = home.join("models/all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run `switchboard models fetch` (./test.sh does)",
        dir.display()
    );
    dir
}
