//! The running gateway's shared state: what every request handler reads, built once from a
//! validated config; the policy and keys swapped whole on reload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use switchboard_router::batcher::EmbeddingService;
use switchboard_router::classifier::Classifier;
use switchboard_router::heads::Heads;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::catalog::Catalog;
use crate::config::{Config, Limits, RouterConfig};
use crate::conversations::Conversations;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::model_store::ModelStore;
use crate::policy::Policy;
use crate::providers::{Credentials, RemoteClient};
use crate::standing::Standings;

/// Everything a request handler needs, shared by all of them.
pub struct Gateway {
    pub limits: Limits,
    pub catalog: Catalog,
    /// The tenants' keys; a reload swaps them whole.
    auth: RwLock<Arc<Authenticator>>,
    pub remote: RemoteClient,
    pub metrics: Arc<Metrics>,
    /// Scores chat requests; `None` when the config has no `router`.
    pub classifier: Option<Classifier>,
    /// One permit per request being handled; none left means shed load.
    pub in_flight: Arc<Semaphore>,
    /// The policy in force; a reload swaps it whole.
    policy: RwLock<Arc<Policy>>,

    /// Each tenant's spend and escalations in the current windows.
    pub standings: Arc<Standings>,
    /// Every finished request.
    pub ledger: Arc<Ledger>,
    /// Conversations that escalated, and their tier.
    pub conversations: Conversations,
    /// Whether the ledger keeps the router's text of each request.
    pub keep_routing_text: bool,
    shutting_down: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Models(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    RouterHeads(#[from] switchboard_router::heads::HeadsError),
    #[error("cannot embed the router's custom domains: {0}")]
    RouterDomains(#[from] switchboard_router::embedder::EmbedderError),
    #[error("invalid policy: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policy(Vec<switchboard_policies::problems::Problem>),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Gateway {
    /// Builds the gateway for a validated config; provider keys are read through `env`.
    pub fn new(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
        store: &ModelStore,
    ) -> Result<Self, StartError> {
        install_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let catalog = Catalog::new(config, env, store)?;
        let policy = Policy::from_config(config).map_err(StartError::Policy)?;
        let ledger = Ledger::from_config(&config.ledger)?;
        let standings = Standings::default();
        restore(&standings, &ledger)?;
        Ok(Self {
            policy: RwLock::new(Arc::new(policy)),
            standings: Arc::new(standings),
            ledger: Arc::new(ledger),
            conversations: Conversations::default(),
            keep_routing_text: config.ledger.keep_routing_text,
            limits: config.limits.clone(),
            classifier: classifier(config, &catalog)?,
            catalog,
            auth: RwLock::new(Arc::new(Authenticator::new(&config.tenants))),
            remote: RemoteClient::new(&config.upstream, metrics.clone())?,
            metrics,
            in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Brings the metrics that the local engines and the router keep themselves up to date,
    /// before a scrape.
    pub fn refresh_component_metrics(&self) {
        if let Some(classifier) = &self.classifier {
            let (hits, misses) = classifier.recent_hits_and_misses();
            self.metrics.router_cache_totals(hits, misses);
        }
        let today = switchboard_policies::tenant::calendar::day(crate::api::unix_now());
        for (tenant, budget) in self.policy().budgets() {
            let spend = self.standings.state(tenant, today).spend;
            self.metrics.budget_left(tenant, budget, spend);
        }
        for local in self.catalog.local_models() {
            self.metrics.local_engine(&local.name, &local.engine);
        }
    }

    /// The policy in force now; a request keeps the one it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tenants' keys in force now.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a validated config's tenants and routing rules in force.
    pub(crate) fn replace_policy(&self, config: &Config) {
        // Validated: building the policy cannot fail here.
        if let Ok(policy) = Policy::from_config(config) {
            // The policy first: a new tenant's key works only once its rules are in force.
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
            let auth = Arc::new(Authenticator::new(&config.tenants));
            *self.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// From now on, requests are refused with 503 and readiness fails.
    pub(crate) fn start_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Says at start what will not work, so that nobody finds out from a failing request.
    pub(crate) fn warn_about_setup(&self) {
        let providers = self.catalog.providers();
        for provider in providers {
            if let Credentials::Missing { env } = provider.credentials() {
                tracing::warn!(
                    provider = %provider.name,
                    "remote provider '{}' is off: environment variable {env} is not set; its models answer 503 until it is",
                    provider.name
                );
            }
        }
        if !providers.iter().any(|p| p.is_usable()) {
            tracing::warn!(
                "the remote tier is off: no provider has a key, so no request can be escalated"
            );
        }
        if self.auth().accepts_demo_key() {
            tracing::warn!(
                "the demo key from the README is active: anyone who can reach this port can use it; remove the demo tenant before exposing Switchboard"
            );
        }
        if self.auth().tenants().is_empty() {
            tracing::warn!("no tenant is configured: every request will get 401");
        }
    }
}

/// Fills the tenants' standings with this month's records: a restart forgets no spend.
fn restore(standings: &Standings, ledger: &Ledger) -> Result<(), crate::ledger::LedgerError> {
    use switchboard_policies::tenant::calendar;
    let today = calendar::day(crate::api::unix_now());
    let month = calendar::month(today);
    // The first day of this month: at most 30 days back.
    let first = (today.saturating_sub(30)..=today)
        .find(|&d| calendar::month(d) == month)
        .unwrap_or(today);
    let mut restored = 0usize;
    for entry in ledger.since(first * 86_400_000) {
        let entry = entry?;
        let settled = crate::standing::Settled {
            unix_seconds: entry.at_ms / 1000,
            cost: entry.cost,
            routed: entry.escalated,
        };
        standings.add(&entry.tenant, settled, today);
        restored += 1;
    }
    tracing::info!(
        records = restored,
        "tenants' spend restored from the ledger"
    );
    Ok(())
}

/// The router of the config, reading requests with one of the catalog's embedders.
fn classifier(config: &Config, catalog: &Catalog) -> Result<Option<Classifier>, StartError> {
    let Some(router) = &config.router else {
        return Ok(None);
    };
    // Validated: the router names a configured embedding model.
    let Some(embedder) = catalog.embedder(&router.embedding_model) else {
        return Ok(None);
    };
    Ok(Some(router_classifier(router, embedder.clone())?))
}

/// The classifier that a config's `router` section describes, reading with `embedder`.
pub fn router_classifier(
    router: &RouterConfig,
    embedder: Arc<EmbeddingService>,
) -> Result<Classifier, StartError> {
    let heads = Heads::load_or_shipped(router.heads.as_deref())?;
    let domains = router.domains.clone().into_iter().collect();
    Ok(Classifier::new(embedder, heads, domains)?)
}

/// reqwest is built without a default TLS crypto backend (ring is lighter to build than
/// aws-lc); this installs ring once per process.
fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
