//! A running member: the embed API (start a member in-process, like etcd's `embed` package)
//! and `run`, what the `rkv` binary does.

mod background;
mod boot;
mod compactor;
mod serving;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rkv_storage::Store;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::identity::IdentityError;
use crate::state::MemberState;

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] IdentityError),
    #[error("cannot open the store: {0}")]
    Store(#[from] rkv_storage::StorageError),
    /// The member's own state in the store (alarms, auth) cannot be read.
    #[error("cannot load the member's state: {0}")]
    State(#[from] crate::error::ServerError),
    #[error(transparent)]
    Takeover(#[from] crate::etcd_files::takeover::TakeoverError),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
    #[error("cannot start: {0}")]
    Thread(std::io::Error),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("failed to create a JWT token provider: {0}")]
    Jwt(#[from] crate::auth::jwt::JwtError),
}

/// A started member. Dropping it without `stop` leaves its tasks running until the runtime ends.
pub struct Member {
    client_addrs: Vec<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<MemberState>,
    /// Lets `stop` wait until the store is closed and the data dir can be opened again.
    store_ref: std::sync::Weak<Store>,
}

impl Member {
    /// Opens the data dir and the store, starts raft, binds the peer and client URLs and
    /// starts serving.
    pub async fn start(config: Config) -> Result<Member, StartError> {
        let peer_tls = boot::peer_client_tls(&config)?;
        let initial = boot::initial_members(&config);
        let (identity, taking_over) = boot::prepare_data_dir(&config, &peer_tls, &initial).await?;
        let core = boot::open_core(&config, &identity).await?;
        let node = boot::start_node(&config, &identity, &core, peer_tls, initial, taking_over).await?;
        for flag in &config.ignored {
            warn!(flag = %flag, "etcd flag accepted but not used by rkv");
        }
        let listeners = serving::bind_listeners(&config).await?;
        let client_addrs = listeners.client_addrs();
        let store_ref = Arc::downgrade(&core.store);
        let boot::Core { store, hub, lessor, metrics, applier } = core;
        let state = Arc::new(MemberState::new(config, identity, store, applier, node, hub, lessor, metrics));
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = serving::start_serving(&state, listeners, stop_rx).await;
        info!(
            name = %state.config.name,
            member_id = %format!("{:x}", state.identity.member_id),
            cluster_id = %format!("{:x}", state.identity.cluster_id),
            urls = ?state.config.advertise_client_urls,
            "ready to serve client requests"
        );
        Ok(Member { client_addrs, stop_tx, tasks, state, store_ref })
    }

    /// The addresses actually bound (port 0 in the config gets a free port).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    pub fn member_id(&self) -> u64 {
        self.state.identity.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.state.identity.cluster_id
    }

    /// Stops serving, waits for in-flight requests, raft (and with it the state machine's
    /// applies) and the store to close.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("stopped serving client requests");
        if let Err(e) = self.state.node.raft.shutdown().await {
            warn!(error = %e, "raft did not stop cleanly");
        }
        drop(self.state);
        // Reads still running on the blocking pool hold the store a little longer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.store_ref.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.store_ref.strong_count() > 0 {
            warn!("store still in use after stop");
        } else {
            info!("store closed");
        }
    }
}

/// What the `rkv` binary does: start, serve until SIGINT or SIGTERM, stop cleanly.
pub async fn run(config: Config) -> Result<(), StartError> {
    let member = Member::start(config).await?;
    wait_for_signal().await;
    info!("received signal; shutting down");
    member.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
