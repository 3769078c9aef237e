//! The accept loop and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::session;
use crate::storage::{self, StorageError};
use crate::tls::{ServerTls, TlsError};

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Backend(#[from] crate::nats::BackendError),
}

/// A hub ready to serve: its configuration checked, its data dir (if any) locked and read back.
#[derive(Debug)]
pub struct Server {
    hub: Arc<Hub>,
    writer: Option<storage::Writer>,
    summary: String,
}

impl Server {
    /// Check the configuration, open the data dir or connect to the NATS backend.
    pub async fn open(config: Config) -> Result<Server, ServeError> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(ServerTls::load(files.clone())?)),
            None => None,
        };
        let revoked =
            crate::keys::Revoked::open(config.data_dir.as_ref().map(|d| d.path.as_path()))
                .map_err(|e| ConfigError(e.to_string()))?;
        let backend = config.backend.clone();
        let broker = config.broker.clone();
        let mut opened = Hub::from_config(config)?;
        if let Some(backend) = backend {
            let gateway = crate::nats::Gateway::open(&backend, broker).await?;
            opened.summary = gateway.summary(&backend).await;
            opened.hub.use_gateway(gateway);
        }
        opened.hub.tls = tls;
        opened.hub.revoked = revoked;
        Ok(Server {
            hub: Arc::new(opened.hub),
            writer: opened.writer,
            summary: opened.summary,
        })
    }

    /// Serve `/metrics`, `/healthz` and `/readyz` on `listener` too, plain HTTP and without a
    /// token (`taskhub serve --metrics-listen`: bind it to a private address), while the process
    /// runs.
    pub fn serve_metrics(&self, listener: TcpListener) {
        tokio::spawn(crate::ops::serve_listener(listener, self.hub.clone()));
    }

    /// The port's TLS side, to reload its certificate (on SIGHUP); `None` for a plain hub.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.hub.tls.clone()
    }

    /// Where the hub keeps its tasks, and what start-up found there: one line for the operator.
    pub fn storage_summary(&self) -> &str {
        &self.summary
    }

    /// Serve `listener` until `shutdown` completes. Then every session is released (its leased
    /// tasks go back to their queues) and sent a Close frame, and the journal is written out;
    /// returns once all sessions have ended or the shutdown grace period has passed.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Server { hub, writer, .. } = self;
        serve(hub, listener, shutdown).await;
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.close()).await;
        }
    }
}

/// Connections the kernel completes and queues for the hub before it accepts them. tokio's
/// default (1,024) overflows under a flood of sockets reopened as fast as the hub closes them,
/// and then a real client's connect waits a whole SYN retransmission (1 s); the kernel caps
/// this at `net.core.somaxconn` (4,096 on current Linux).
const LISTEN_BACKLOG: u32 = 4_096;

/// Listen on `addr` (`host:port`; port 0 picks a free one) with the hub's backlog.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} names no address"),
        )
    }))
}

/// [`Server::open`] then [`Server::run`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let server = Server::open(config).await?;
    tracing::info!("{}", server.storage_summary());
    server.run(listener, shutdown).await;
    Ok(())
}

async fn serve(hub: Arc<Hub>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let grace = hub.config.shutdown_grace;
    let (stop_tx, stop_rx) = watch::channel(false);
    let timer = tokio::spawn(hub.clone().run_timer(stop_rx.clone()));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.spawn(session::serve(stream, peer, hub.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    hub.shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(sessions = sessions.len(), "shutting down");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sessions.len(),
            "shutdown grace period over; cutting the rest"
        );
        sessions.shutdown().await;
    }
    let _ = timer.await;
    if let Some(gw) = &hub.gateway {
        gw.shutdown().await;
    }
}

/// A hub running on a background task: for tests, the demo and embedding.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Bind `addr` (use port 0 for a free port) and serve in the background.
    pub async fn start(addr: &str, config: Config) -> std::io::Result<Running> {
        let server = Server::open(config)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = server.tls();
        let listener = bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Ok(Running {
            addr,
            tls,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR` (`wss://ADDR` with TLS), what clients connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// The port's TLS side, when it has one.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_deref()
    }

    /// Shut down gracefully and wait for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
