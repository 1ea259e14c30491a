//! Starting and stopping a relay: open the store, bind the ports, run until told to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cohort_core::store::Store;
use cohort_crypto::identity::IdentityKey;
use cohort_grpc::GrpcOptions;
use cohort_relay::Relay;
use cohort_store::{Durability, SqliteStore, StoreOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, COORDINATOR_KEY_FILE};
use crate::http;

/// A running relay.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub relay: Arc<Relay>,
    /// Where the coordinator key was created on this start, if it was.
    pub created_coordinator_key: Option<std::path::PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), String>>,
}

/// Reads the coordinator key in `data_dir`, creating it (mode 0600) if missing. Returns the key
/// and whether it was created.
pub fn coordinator_key(data_dir: &Path) -> Result<(IdentityKey, bool), String> {
    let path = data_dir.join(COORDINATOR_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut secret = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut secret)
                .map_err(|_| format!("{} does not hold a 64-hex-char Ed25519 secret key; delete it to make a new one", path.display()))?;
            Ok((IdentityKey::from_bytes(&secret), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
            let key = IdentityKey::generate();
            write_secret(&path, &hex::encode(key.to_bytes()))?;
            Ok((key, true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Opens the store, binds the ports and starts serving. Errors name the file or port and the fix.
pub async fn start(config: Config) -> Result<Running, String> {
    config.check()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let mut keys = config.parsed_coordinator_keys()?;
    let mut created_coordinator_key = None;
    if keys.is_empty() {
        let (key, created) = coordinator_key(&config.data_dir)?;
        if created {
            created_coordinator_key = Some(config.data_dir.join(COORDINATOR_KEY_FILE));
        }
        keys.push(key.public());
    }
    let durability = if config.durability == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    };
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &config.database_path(),
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        )
        .map_err(|e| e.message)?,
    );
    let mut limits = config.relay_limits();
    limits.max_connections = fit_descriptor_limit(limits.max_connections);
    let relay = Relay::new(store, limits, keys);

    let listener = TcpListener::bind(config.grpc_addr).await.map_err(|e| {
        format!(
            "cannot listen for gRPC on {}: {e}; choose another with grpc_addr or COHORT_GRPC_ADDR",
            config.grpc_addr
        )
    })?;
    let grpc_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    let metrics_addr = match config.metrics_addr {
        Some(addr) => {
            let l = http::bind(addr).await.map_err(|e| {
                format!("cannot listen for metrics on {addr}: {e}; choose another with metrics_addr or COHORT_METRICS_ADDR (empty turns it off)")
            })?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            tasks.push(tokio::spawn(http::serve(relay.clone(), l)));
            Some(bound)
        }
        None => None,
    };
    tasks.push(tokio::spawn(relay.clone().run_sweeper(
        Duration::from_millis(config.sweep_interval_ms.max(10)),
    )));

    let grpc = tokio::spawn(cohort_grpc::serve(
        relay.clone(),
        listener,
        GrpcOptions::for_relay(&relay),
    ));
    Ok(Running {
        grpc_addr,
        metrics_addr,
        relay,
        created_coordinator_key,
        tasks,
        grpc,
    })
}

/// Descriptors kept for everything but client connections: the store, the listeners, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft file descriptor limit to fit `max_connections` when the hard limit allows,
/// and otherwise lowers `max_connections` to fit, saying so: past the descriptor limit,
/// accepting fails and every new client times out instead of being refused.
fn fit_descriptor_limit(max_connections: usize) -> usize {
    let wanted = (max_connections as u64).saturating_add(RESERVED_DESCRIPTORS);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit >= wanted => max_connections,
        Ok(limit) => {
            let fits = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(1))
                .unwrap_or(max_connections);
            tracing::warn!(
                max_connections,
                descriptor_limit = limit,
                lowered_to = fits,
                "max_connections does not fit the file descriptor limit (ulimit -n); lowered it. Raise the limit (e.g. LimitNOFILE in systemd) to allow more"
            );
            fits
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit; max_connections is used as configured");
            max_connections
        }
    }
}

impl Running {
    /// Stops accepting, ends every stream, gives connections `shutdown_grace_ms` to finish
    /// their calls (then closes them), and closes the store.
    pub async fn shutdown(self) -> Result<(), String> {
        self.relay.begin_shutdown();
        let served = self.grpc.await;
        for t in self.tasks {
            let _ = t.await;
        }
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC front ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC front task failed"),
        }
        self.relay.close().await.map_err(|e| e.message)
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
