//! A real relay in-process (SQLite in a temp dir, gRPC on 127.0.0.1), a TCP proxy whose
//! connections a test can cut, and small helpers for driving parties through the SDK.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_client::{Client, ClientOptions, CreateSession, JoinInfo};
use cohort_crypto::identity::IdentityKey;
use cohort_server::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Safety net only: no test waits on timing, but none may hang forever.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, under the safety-net timeout.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

pub struct TestRelay {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    running: Option<Running>,
    coordinator_secret: [u8; 32],
    tweak: fn(&mut Config),
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    /// Starts a relay whose config `tweak` adjusts (limits, mostly).
    pub async fn start_with(tweak: fn(&mut Config)) -> TestRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        let coordinator = IdentityKey::generate();
        let mut relay = TestRelay {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
            coordinator_secret: coordinator.to_bytes(),
            tweak,
        };
        relay.boot().await;
        relay
    }

    fn config(&self) -> Config {
        let mut config = Config {
            data_dir: self.dir.path().to_path_buf(),
            grpc_addr: self.addr,
            metrics_addr: None,
            coordinator_keys: vec![hex::encode(self.coordinator_key().public())],
            ..Config::default()
        };
        (self.tweak)(&mut config);
        config
    }

    async fn boot(&mut self) {
        let running = cohort_server::start(self.config())
            .await
            .expect("relay starts");
        self.addr = running.grpc_addr;
        self.running = Some(running);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The running relay's application service (its counters).
    pub fn engine(&self) -> Arc<cohort_server::Relay> {
        self.running.as_ref().expect("relay running").relay.clone()
    }

    pub fn coordinator_key(&self) -> IdentityKey {
        IdentityKey::from_bytes(&self.coordinator_secret)
    }

    /// The coordinator enrolls `party_id` to `key`, so `key` may log in as it.
    pub async fn enroll(&self, party_id: &str, key: &IdentityKey) {
        coordinator(self)
            .await
            .enroll(party_id, &key.public(), "")
            .await
            .unwrap_or_else(|e| panic!("enroll {party_id}: {e}"));
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("relay shuts down cleanly");
        }
    }

    /// Starts again on the same data directory and the same address.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop the relay first");
        self.boot().await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Every byte the relay stored on disk (database, WAL, anything in the data directory).
    pub fn stored_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("data dir") {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                out.extend(std::fs::read(&path).expect("read stored file"));
            }
        }
        out
    }
}

/// Options with short backoffs, so reconnects in tests are quick.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        call_attempts: 50,
        ..ClientOptions::default()
    }
}

/// A party enrolled to a fresh key on `relay`, logged in through `url` (the relay's, or a
/// proxy's in front of it), registered, with a published encryption key.
pub async fn party(relay: &TestRelay, url: &str, party_id: &str) -> Client {
    let key = IdentityKey::generate();
    relay.enroll(party_id, &key).await;
    let client = Client::connect_with(url, party_id, key, fast_options())
        .await
        .expect("party connects");
    client
        .register("persistent", "test", None)
        .await
        .expect("party registers");
    client
        .generate_encryption_key()
        .await
        .expect("party publishes its encryption key");
    client
}

pub async fn coordinator(relay: &TestRelay) -> Client {
    let c = Client::connect_with(
        &relay.url(),
        "coordinator",
        relay.coordinator_key(),
        fast_options(),
    )
    .await
    .expect("coordinator connects");
    assert!(c.is_coordinator(), "the test key is a coordinator key");
    c
}

/// Creates a session of `parties` and has each join and mark ready.
pub async fn started_session(coordinator: &Client, parties: &[&Client]) -> (String, Vec<JoinInfo>) {
    let ids: Vec<String> = parties.iter().map(|p| p.party_id().to_string()).collect();
    let n = u16::try_from(ids.len()).expect("few parties");
    let created = coordinator
        .create_session(CreateSession {
            session_type: "keygen".into(),
            n,
            t: n.min(2),
            parties: ids,
            ..CreateSession::default()
        })
        .await
        .expect("session created");
    let mut infos = Vec::new();
    for p in parties {
        let token = &created.join_tokens[p.party_id()];
        infos.push(
            p.join(&created.session_id, token)
                .await
                .expect("party joins"),
        );
    }
    for p in parties {
        p.ready(&created.session_id).await.expect("party ready");
    }
    (created.session_id, infos)
}

/// A TCP proxy in front of the relay whose live connections a test can cut, as a network
/// failure would, while the relay keeps running; and which can swallow what the relay sends
/// back, as a connection that dies after the request got through would.
pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    swallow: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let swallow = Arc::new(AtomicBool::new(false));
        let live = connections.clone();
        let swallowing = swallow.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let swallowing = swallowing.clone();
                let task = tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let (mut down_rx, mut down_tx) = down.into_split();
                    let (mut up_rx, mut up_tx) = up.into_split();
                    let to_relay = tokio::io::copy(&mut down_rx, &mut up_tx);
                    let to_client = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match up_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if swallowing.load(Ordering::SeqCst) {
                                continue;
                            }
                            if down_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = to_relay => {}
                        _ = to_client => {}
                    }
                });
                live.lock().expect("proxy lock").push(task);
            }
        });
        Proxy {
            addr,
            connections,
            swallow,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection open through the proxy; new ones are accepted as before.
    pub fn cut(&self) {
        for t in self.connections.lock().expect("proxy lock").drain(..) {
            t.abort();
        }
    }

    /// While on, what the relay sends is dropped on the way to the client.
    pub fn swallow_replies(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
