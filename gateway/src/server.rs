//! Serving the gateway: binding its address, accepting connections, and the graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::model_store::ModelStore;
use crate::state::{Gateway, StartError};

/// A gateway bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
}

impl Server {
    /// Binds with provider keys from the process environment and the default model store.
    pub async fn bind(config: &Config, addr: SocketAddr) -> Result<Self, StartError> {
        let store = ModelStore::from_env();
        Self::bind_with(config, addr, |var| std::env::var(var).ok(), &store).await
    }

    /// Binds with provider keys read through `env` and default models from `store`.
    pub async fn bind_with(
        config: &Config,
        addr: SocketAddr,
        env: impl Fn(&str) -> Option<String>,
        store: &ModelStore,
    ) -> Result<Self, StartError> {
        let gateway = Gateway::new(config, env, store).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            listener,
            gateway: Arc::new(gateway),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serves until `shutdown` completes, then stops accepting connections and gives in-flight
    /// requests up to `limits.shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let addr = self.local_addr();
        let gateway = self.gateway;
        gateway.warn_about_setup();
        tracing::info!(%addr, "switchboard listening");

        let app = crate::endpoints::router(gateway.clone());
        let limits = &gateway.limits;
        let connections = crate::connections::Connections::new(limits, gateway.metrics.clone());
        tokio::select! {
            () = connections.accept(&self.listener, app) => {}
            () = shutdown => {}
        }
        drop(self.listener);
        gateway.start_shutting_down();
        let grace = limits.shutdown_grace;
        tracing::info!(
            in_flight = gateway.metrics.in_flight(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: no new connections, finishing in-flight requests"
        );
        let served = tokio::time::timeout(grace, connections.close()).await;
        // A fleet's settles still on their way to Redis get a moment more (any that cannot
        // land lapse with their holds), and so do the records waiting to be shipped to its
        // ledger table (any left are shipped at the next start).
        let a_moment = std::time::Duration::from_secs(5);
        let _ = tokio::time::timeout(a_moment, gateway.shared.settled()).await;
        if let Some(fleet_ledger) = &gateway.fleet_ledger {
            fleet_ledger.drain(&gateway.ledger, a_moment).await;
        }
        if let Err(error) = gateway.ledger.flush() {
            tracing::error!(%error, "cannot flush the ledger at shutdown");
        }
        match served {
            Ok(()) => tracing::info!("shut down cleanly"),
            Err(_) => tracing::warn!(
                cut_off = gateway.metrics.in_flight(),
                "grace period over: cutting off the requests still running"
            ),
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
