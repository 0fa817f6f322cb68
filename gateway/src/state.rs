//! The running gateway's shared state: what every request handler reads, built once from a
//! validated config; the policy and keys swapped whole on reload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use switchboard_router::batcher::EmbeddingService;
use switchboard_router::classifier::Classifier;
use switchboard_router::heads::Heads;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::catalog::Catalog;
use crate::config::{Config, Limits, PostgresConfig, RouterConfig};
use crate::ledger::Ledger;
use crate::ledger::postgres::FleetTable;
use crate::ledger::shipping::Shipping;
use crate::metrics::Metrics;
use crate::model_store::ModelStore;
use crate::policy::Policy;
use crate::providers::{Credentials, RemoteClient};
use crate::shared_state::{Embedded, Fleet, FleetError, Restored, SharedState};

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

    /// Each tenant's spend, escalations and rate limit, and the conversations that escalated:
    /// in this process, or in Redis for a fleet.
    pub shared: Arc<SharedState>,
    /// Every finished request.
    pub ledger: Arc<Ledger>,
    /// A fleet's ledger in PostgreSQL, which this replica's records are shipped to.
    pub fleet_ledger: Option<FleetLedger>,
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
    #[error(transparent)]
    Fleet(#[from] crate::shared_state::FleetError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Gateway {
    /// Builds the gateway for a validated config; provider keys (and a fleet's Redis URL) are
    /// read through `env`.
    pub async fn new(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
        store: &ModelStore,
    ) -> Result<Self, StartError> {
        install_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let shared = match &config.fleet {
            Some(fleet) => SharedState::Fleet(Fleet::new(
                fleet,
                config.limits.request_timeout,
                &env,
                metrics.clone(),
            )?),
            None => {
                // The store in this process always answers.
                metrics.state_store_reachable(true);
                SharedState::Embedded(Embedded::default())
            }
        };
        let catalog = Catalog::new(config, &env, store)?;
        for local in catalog.local_models() {
            // Each server is probed before the gateway takes requests, then every
            // `health_every`.
            local.probe_servers().await;
            local.watch_servers();
        }
        let policy = Policy::from_config(config).map_err(StartError::Policy)?;
        let mut ledger = Ledger::from_config(&config.ledger)?;
        let postgres = config.fleet.as_ref().and_then(|f| f.postgres.as_ref());
        if postgres.is_some() {
            ledger = ledger.with_outbox()?;
        }
        let ledger = Arc::new(ledger);
        let shared = Arc::new(shared);
        let fleet_ledger = match postgres {
            Some(postgres) => Some(FleetLedger::start(
                postgres, &env, &ledger, &shared, &metrics,
            )?),
            None => None,
        };
        restore(&shared, &ledger, fleet_ledger.as_ref()).await?;
        Ok(Self {
            policy: RwLock::new(Arc::new(policy)),
            shared,
            ledger,
            fleet_ledger,
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
    pub async fn refresh_component_metrics(&self) {
        if let Some(classifier) = &self.classifier {
            let (hits, misses) = classifier.recent_hits_and_misses();
            self.metrics.router_cache_totals(hits, misses);
        }
        let today = switchboard_policies::tenant::calendar::day(crate::api::unix_now());
        for (tenant, budget) in self.policy().budgets() {
            // Left as it was when the store cannot be reached.
            if let Ok(state) = self.shared.standing(tenant, today).await {
                self.metrics.budget_left(tenant, budget, state.spend);
            }
        }
        for local in self.catalog.local_models() {
            if let Some(engine) = local.engine() {
                self.metrics.local_engine(&local.name, engine);
            }
            for server in local.servers() {
                self.metrics
                    .local_server(&local.name, &server.label, server.stats());
            }
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

/// A fleet's ledger table, the task that ships this replica's outbox to it, and the one that
/// reconciles Redis's spend with it.
pub struct FleetLedger {
    pub table: Arc<FleetTable>,
    shipper: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    batch_rows: usize,
}

impl FleetLedger {
    /// Starts shipping `ledger`'s outbox to the table whose connection string `env` gives.
    fn start(
        config: &PostgresConfig,
        env: impl Fn(&str) -> Option<String>,
        ledger: &Arc<Ledger>,
        shared: &Arc<SharedState>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, FleetError> {
        let url = env(&config.url_env)
            .filter(|url| !url.is_empty())
            .ok_or_else(|| FleetError::MissingUrl(config.url_env.clone()))?;
        let table = Arc::new(FleetTable::new(url, config.timeout));
        let shipping = Shipping {
            flush_every: Duration::from_millis(config.flush_every_ms),
            batch_rows: config.batch_rows,
        };
        let shipper = tokio::spawn(crate::ledger::shipping::ship(
            ledger.clone(),
            table.clone(),
            shipping,
            metrics.clone(),
        ));
        let reconciler = tokio::spawn(crate::shared_state::reconcile::run(
            shared.clone(),
            table.clone(),
            config.reconcile_every,
            metrics.clone(),
        ));
        Ok(Self {
            table,
            shipper,
            reconciler,
            batch_rows: config.batch_rows,
        })
    }

    /// Ships what waits in the outbox now, for up to `within`, then stops shipping: at
    /// shutdown. What is left waits on disk for the next start.
    pub async fn drain(&self, ledger: &Ledger, within: Duration) {
        self.reconciler.abort();
        self.shipper.abort();
        let drained = tokio::time::timeout(within, async {
            while ledger.unshipped_count() > 0 {
                let shipping =
                    crate::ledger::shipping::ship_once(ledger, &self.table, self.batch_rows);
                if shipping.await.is_err() {
                    return;
                }
            }
        });
        let _ = drained.await;
        if ledger.unshipped_count() > 0 {
            tracing::warn!(
                waiting = ledger.unshipped_count(),
                "ledger records left in the outbox: they are shipped at the next start"
            );
        }
    }
}

/// Fills the tenants' standings with this month's records: a restart forgets no spend. A
/// fleet's replica sums the fleet's table (its own ledger when PostgreSQL cannot be read).
async fn restore(
    shared: &SharedState,
    ledger: &Ledger,
    fleet_ledger: Option<&FleetLedger>,
) -> Result<(), crate::ledger::LedgerError> {
    use switchboard_policies::tenant::calendar;
    let today = calendar::day(crate::api::unix_now());
    let month = calendar::month(today);
    let first = calendar::first_of_month(today);
    if let Some(fleet) = fleet_ledger {
        let totals = fleet
            .table
            .totals(calendar::start_ms(first), calendar::start_ms(today));
        match totals.await {
            Ok(totals) => {
                shared.restore(&totals, today).await;
                tracing::info!(
                    tenants = totals.len(),
                    "tenants' spend restored from the fleet's ledger"
                );
                return Ok(());
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot read the fleet's ledger: spend restored from this replica's own"
            ),
        }
    }
    let mut records = 0usize;
    let mut totals = std::collections::BTreeMap::<String, Restored>::new();
    for entry in ledger.since(calendar::start_ms(first)) {
        let entry = entry?;
        let day = calendar::day(entry.at_ms / 1000);
        if calendar::month(day) != month {
            continue;
        }
        let restored = totals.entry(entry.tenant).or_default();
        restored.this_month += entry.cost;
        if day == today {
            restored.today += entry.cost;
            if let Some(escalated) = entry.escalated {
                restored.routed += 1;
                restored.escalated += u64::from(escalated);
            }
        }
        records += 1;
    }
    let totals: Vec<(String, Restored)> = totals.into_iter().collect();
    shared.restore(&totals, today).await;
    tracing::info!(records, "tenants' spend restored from the ledger");
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
