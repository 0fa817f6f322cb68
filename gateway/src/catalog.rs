//! The models clients can ask for: local models (answered in-process, by a pool of servers, or
//! both), and remote models each with its fallback chain of provider targets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard_local_engine::{Engine, EngineConfig, ModelSettings};
use switchboard_router::batcher::{BatchSettings, EmbeddingService};
use switchboard_router::embedder::{BertEmbedder, Embed};

use crate::config::{Config, EmbeddingModelConfig, LocalModelConfig};
use crate::model_store::{ModelStore, Package};
use crate::providers::local::{LocalModel, PoolServer};
use crate::providers::{Provider, Target};

pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    /// Model name → its chain: the model itself first, then its fallbacks in order.
    chains: BTreeMap<String, Vec<Target>>,
    local: BTreeMap<String, Arc<LocalModel>>,
    embedders: BTreeMap<String, Arc<EmbeddingService>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    LocalModel(#[from] switchboard_local_engine::LoadError),
    #[error(transparent)]
    Embedder(#[from] switchboard_router::embedder::EmbedderError),
    #[error("cannot start the embedder's thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot build the local pool's HTTP client: {0}")]
    PoolClient(#[from] reqwest::Error),
}

/// The client of the local pools' servers: a generation may say nothing for as long as the
/// whole request may take (a server answering without streaming).
fn pool_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    // Idle connections close below the 5 s for which common servers (uvicorn under vLLM) keep
    // them: a reused connection the server already closed would fail the request.
    let idle = std::time::Duration::from_secs(4);
    let (connect, read) = (
        config.upstream.connect_timeout,
        config.limits.request_timeout,
    );
    crate::providers::http_client(connect, read, idle)
}

/// Where a configured model is: its `path`, else what `locate` gives for its default model.
fn model_location(
    path: &Option<PathBuf>,
    default_model: &Option<String>,
    locate: impl Fn(&Package) -> PathBuf,
) -> PathBuf {
    match (path, default_model.as_deref().and_then(Package::named)) {
        (Some(path), _) => path.clone(),
        (None, Some(package)) => locate(package),
        // Validated: one of the two is there.
        (None, None) => PathBuf::new(),
    }
}

/// The folder of an embedding model: its `path`, else its default model's place in `store`.
pub fn embedding_model_dir(model: &EmbeddingModelConfig, store: &ModelStore) -> PathBuf {
    model_location(&model.path, &model.default_model, |p| {
        store.root().join(p.id)
    })
}

/// A local model: its engine loaded (from `store` for a default model), its servers' keys read
/// through `env`.
fn local_model(
    model: &LocalModelConfig,
    store: &ModelStore,
    pool_http: Option<&reqwest::Client>,
    request_timeout: std::time::Duration,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LocalModel, CatalogError> {
    let engine = if model.runs_in_process() {
        Some(Engine::load(&EngineConfig {
            path: model_location(&model.path, &model.default_model, |p| store.main_file(p)),
            queue_capacity: model.queue_capacity,
            max_context: model.max_context,
            model: ModelSettings {
                max_batch: model.max_batch,
                prefix_cache_bytes: model.prefix_cache_mib.saturating_mul(1 << 20),
            },
        })?)
    } else {
        None
    };
    let servers = pool_http.map_or_else(Vec::new, |http| {
        let servers = model.servers.iter();
        servers
            .map(|server| PoolServer::new(&model.name, server, http.clone(), &env))
            .collect()
    });
    // Validated: a model answered by servers only gives its window.
    let context_window = match &engine {
        Some(engine) => engine.info().context_length,
        None => model.max_context.unwrap_or_default(),
    };
    Ok(LocalModel::new(
        model.name.clone(),
        engine,
        servers,
        context_window as u64,
        model.health_every,
        request_timeout,
    ))
}

impl Catalog {
    /// Builds the catalog of a validated config: provider keys are read through `env`, local
    /// models are loaded (from `store` for the default ones).
    pub fn new(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
        store: &ModelStore,
    ) -> Result<Self, CatalogError> {
        let providers: Vec<Arc<Provider>> = config
            .providers
            .iter()
            .map(|p| Arc::new(Provider::new(p, &env)))
            .collect();
        let mut targets = BTreeMap::new();
        for (provider, provider_config) in providers.iter().zip(&config.providers) {
            for model in &provider_config.models {
                let target = Target {
                    provider: provider.clone(),
                    model: model.clone(),
                };
                targets.insert(model.name.clone(), target);
            }
        }
        let chains = targets
            .values()
            .map(|target| {
                let fallbacks = target.model.fallbacks.iter();
                let chain = std::iter::once(target)
                    .chain(fallbacks.filter_map(|name| targets.get(name)))
                    .cloned()
                    .collect();
                (target.model.name.clone(), chain)
            })
            .collect();
        let mut local = BTreeMap::new();
        // Built only for a config that has pools.
        let has_pools = config.local_models.iter().any(|m| !m.servers.is_empty());
        let pool_http = has_pools.then(|| pool_client(config)).transpose()?;
        for model in &config.local_models {
            let timeout = config.limits.request_timeout;
            let model = local_model(model, store, pool_http.as_ref(), timeout, &env)?;
            local.insert(model.name.clone(), Arc::new(model));
        }
        let mut embedders = BTreeMap::new();
        for model in &config.embedding_models {
            let dir = embedding_model_dir(model, store);
            let embedder: Arc<dyn Embed> = Arc::new(BertEmbedder::load(&dir)?);
            let service = EmbeddingService::start(embedder, BatchSettings::default())
                .map_err(CatalogError::Thread)?;
            embedders.insert(model.name.clone(), Arc::new(service));
        }
        Ok(Self {
            providers,
            chains,
            local,
            embedders,
        })
    }

    /// The embedding model of that name.
    pub fn embedder(&self, model: &str) -> Option<&Arc<EmbeddingService>> {
        self.embedders.get(model)
    }

    /// The local model of that name.
    pub fn local(&self, model: &str) -> Option<&Arc<LocalModel>> {
        self.local.get(model)
    }

    pub fn local_models(&self) -> impl Iterator<Item = &Arc<LocalModel>> {
        self.local.values()
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// A remote model on its provider, usable or not.
    pub fn target(&self, model: &str) -> Option<&Target> {
        self.chains.get(model).and_then(|chain| chain.first())
    }

    /// The chain of a model that can answer now (some target has its key).
    pub fn usable_chain(&self, model: &str) -> Option<&[Target]> {
        self.chains
            .get(model)
            .map(Vec::as_slice)
            .filter(|chain| chain.iter().any(|t| t.provider.is_usable()))
    }

    /// Every model that can answer now, by name, with who answers it first (`local` or the
    /// provider's name).
    pub fn usable_models(&self) -> impl Iterator<Item = (&str, &str)> {
        let local = self
            .local
            .keys()
            .chain(self.embedders.keys())
            .map(|name| (name.as_str(), "local"));
        let remote = self
            .chains
            .iter()
            .filter(|(name, _)| self.usable_chain(name).is_some())
            .map(|(name, chain)| (name.as_str(), chain[0].provider.name.as_str()));
        local.chain(remote)
    }

    /// Whether `model` is a configured remote model, usable or not.
    pub fn contains(&self, model: &str) -> bool {
        self.chains.contains_key(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ModelStore {
        ModelStore::at(std::env::temp_dir().join("switchboard-no-models"))
    }

    #[test]
    fn chains_follow_fallbacks_and_keyless_models_are_not_usable() {
        let config = Config::from_yaml(
            r#"
providers:
  - name: a
    kind: openai
    base_url: http://a/v1
    api_key_env: A_KEY
    models:
      - { name: m1, price: { input_per_mtok: 1, output_per_mtok: 1 }, fallbacks: [m2] }
  - name: b
    kind: anthropic
    base_url: http://b
    models:
      - { name: m2, price: { input_per_mtok: 1, output_per_mtok: 1 } }
"#,
            "test",
        )
        .unwrap();
        let catalog = Catalog::new(&config, |_| None, &store()).unwrap();
        let chain = catalog.usable_chain("m1").unwrap();
        let names: Vec<_> = chain.iter().map(|t| t.model.name.as_str()).collect();
        assert_eq!(names, ["m1", "m2"]);
        assert_eq!(catalog.usable_models().count(), 2);

        let config = Config::from_yaml(
            "providers: [{name: a, kind: openai, base_url: 'http://a/v1', api_key_env: A_KEY, models: [{name: m1, price: {input_per_mtok: 1, output_per_mtok: 1}}]}]",
            "test",
        )
        .unwrap();
        let catalog = Catalog::new(&config, |_| None, &store()).unwrap();
        assert!(catalog.usable_chain("m1").is_none());
        assert!(catalog.contains("m1"));
        let catalog = Catalog::new(&config, |_| Some("k".into()), &store()).unwrap();
        assert!(catalog.usable_chain("m1").is_some());
    }
}
