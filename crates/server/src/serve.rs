//! Starting and stopping a relay: open the store, bind the ports, run until told to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cohort_crypto::identity::IdentityKey;
use cohort_store::{Durability, SqliteStore, StoreOptions};
use cohort_wire::cohort::{
    admin_server::AdminServer, auth_server::AuthServer, keys_server::KeysServer,
    sessions_server::SessionsServer,
};
use cohort_wire::router::message_router_server::MessageRouterServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, COORDINATOR_KEY_FILE};
use crate::grpc::Services;
use crate::metrics;
use crate::relay::Relay;

/// Largest gRPC message accepted: the payload cap plus room for the envelope.
fn max_message_bytes(config: &Config) -> usize {
    config.limits.max_payload_bytes + 64 * 1024
}

/// A running relay.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub relay: Arc<Relay>,
    /// Where the coordinator key was created on this start, if it was.
    pub created_coordinator_key: Option<std::path::PathBuf>,
    store: Arc<SqliteStore>,
    tasks: Vec<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
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
    let store = Arc::new(
        SqliteStore::open(
            &config.database_path(),
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        )
        .map_err(|e| e.message)?,
    );
    let relay = Relay::new(store.clone(), config.limits.clone(), keys);

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
            let l = metrics::bind(addr).await.map_err(|e| {
                format!("cannot listen for metrics on {addr}: {e}; choose another with metrics_addr or COHORT_METRICS_ADDR (empty turns it off)")
            })?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            tasks.push(tokio::spawn(metrics::serve(relay.clone(), l)));
            Some(bound)
        }
        None => None,
    };
    tasks.push(tokio::spawn(relay.clone().run_sweeper(
        Duration::from_millis(config.sweep_interval_ms.max(10)),
    )));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MessageRouterServer<crate::grpc::RouterService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cohort_wire::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;

    let max = max_message_bytes(&config);
    let s = Services::new(relay.clone());
    let mut stop = relay.shutdown_signal();
    // Without TCP_NODELAY, Nagle and delayed ACKs hold small responses and stream frames for
    // tens of ms. The builder's `tcp_nodelay` covers only sockets tonic binds itself, so set
    // it on the incoming stream of the listener bound above.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(MessageRouterServer::new(s.router).max_decoding_message_size(max))
        .add_service(AuthServer::new(s.auth))
        .add_service(SessionsServer::new(s.sessions).max_decoding_message_size(max))
        .add_service(KeysServer::new(s.keys))
        .add_service(AdminServer::new(s.admin))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|v| *v).await;
        });
    let grpc = tokio::spawn(grpc);
    Ok(Running {
        grpc_addr,
        metrics_addr,
        relay,
        created_coordinator_key,
        store,
        tasks,
        grpc,
    })
}

impl Running {
    /// Stops accepting, ends every stream, waits for in-flight calls, and closes the store.
    pub async fn shutdown(self) -> Result<(), String> {
        self.relay.begin_shutdown();
        let served = self.grpc.await;
        for t in self.tasks {
            let _ = t.await;
        }
        let Running { relay, store, .. } = self;
        drop(relay);
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        match Arc::try_unwrap(store) {
            Ok(store) => store.close().await.map_err(|e| e.message),
            Err(_) => Ok(()), // still referenced by a straggling task; its writer finishes on drop
        }
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
