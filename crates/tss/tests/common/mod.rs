//! What the end-to-end tests share: a real relay in-process (a SQLite file in a temp dir, gRPC
//! on 127.0.0.1), party nodes wired the way `cohort party` wires them (an encrypted key store
//! holding the identity and encryption keys), the coordinator, verifiers that share no code
//! with FROST, and a gRPC proxy that can rewrite or withhold what the party behind it receives.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cohort_client::{event_type, Client, ClientOptions};
use cohort_crypto::identity::IdentityKey;
use cohort_crypto::keystore::{KeyStore, KeyStoreSecret};
use cohort_crypto::seal::EncryptionKeyPair;
use cohort_server::{Config, Running};
use cohort_tss::runner::{
    Coordinator, KeygenResult, Outcome, PartyNode, RunError, SignResult, Traffic,
};
use cohort_tss::{Curve, Ed25519Sha512, KeyShare, Secp256K1Sha256TR};
use cohort_wire::cohort::mailbox_client::MailboxClient;
use cohort_wire::cohort::mailbox_server::{Mailbox, MailboxServer};
use cohort_wire::cohort::{client_frame, server_frame, ClientFrame, Credit, ServerFrame};
use cohort_wire::router::message_router_client::MessageRouterClient;
use cohort_wire::router::message_router_server::{MessageRouter, MessageRouterServer};
use cohort_wire::router::{self, MpcMessage};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Safety net only: no test asserts on time, but none may hang.
pub const SAFETY_NET: Duration = Duration::from_secs(60);
pub const PASSPHRASE: &str = "relay end-to-end tests";
pub const COORDINATOR: &str = "coordinator";

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(SAFETY_NET, fut).await {
        Ok(v) => v,
        Err(_) => panic!("still waiting for {what} after {SAFETY_NET:?}"),
    }
}

/// Polls `check` until it returns `Some`, under the safety net.
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The result of a spawned task, under the safety net.
pub async fn finished<T>(what: &str, task: JoinHandle<T>) -> T {
    within(what, task)
        .await
        .unwrap_or_else(|e| panic!("{what}: task failed: {e}"))
}

/// Short backoffs, so reconnects after a restart are quick.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        call_attempts: 100,
        ..ClientOptions::default()
    }
}

pub fn key_store_secret() -> KeyStoreSecret {
    KeyStoreSecret::Passphrase(PASSPHRASE.into())
}

pub fn names(parties: &[&Party]) -> Vec<String> {
    parties.iter().map(|p| p.name.clone()).collect()
}

/// A relay on a SQLite file in a temp dir. Parties' key stores live in the same temp dir,
/// outside the relay's data directory.
pub struct TestRelay {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    running: Option<Running>,
    coordinator_secret: [u8; 32],
    /// Coordinator keys the relay accepts besides the test coordinator's.
    also_coordinators: Vec<[u8; 32]>,
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::start_accepting(Vec::new()).await
    }

    /// A relay that also gives the coordinator role to `also_coordinators` (whom the parties
    /// need not trust).
    pub async fn start_accepting(also_coordinators: Vec<[u8; 32]>) -> TestRelay {
        let mut relay = TestRelay {
            dir: tempfile::tempdir().expect("temp dir"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            running: None,
            coordinator_secret: IdentityKey::generate().to_bytes(),
            also_coordinators,
        };
        relay.boot().await;
        relay
    }

    fn config(&self) -> Config {
        let mut keys = vec![hex::encode(self.coordinator_key().public())];
        keys.extend(self.also_coordinators.iter().map(hex::encode));
        Config {
            data_dir: self.data_dir(),
            grpc_addr: self.addr,
            metrics_addr: None,
            coordinator_keys: keys,
            ..Config::default()
        }
    }

    async fn boot(&mut self) {
        let running = cohort_server::start(self.config())
            .await
            .unwrap_or_else(|e| panic!("relay starts on {}: {e}", self.addr));
        self.addr = running.grpc_addr;
        self.running = Some(running);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("relay")
    }

    pub fn key_store_path(&self, party: &str) -> PathBuf {
        self.dir.path().join(format!("{party}.keys"))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn coordinator_key(&self) -> IdentityKey {
        IdentityKey::from_bytes(&self.coordinator_secret)
    }

    /// The coordinator keys parties trust: the test coordinator's only.
    pub fn trusted(&self) -> Vec<[u8; 32]> {
        vec![self.coordinator_key().public()]
    }

    /// Messages accepted by RouteMessage since this relay (process) started.
    pub fn routed(&self) -> u64 {
        self.running
            .as_ref()
            .expect("the relay is running")
            .relay
            .messages_routed()
    }

    /// Waits until RouteMessage has accepted at least `n` messages since the relay started.
    pub async fn wait_routed(&self, n: u64) {
        eventually(&format!("{n} messages routed"), || async {
            (self.routed() >= n).then_some(())
        })
        .await
    }

    /// Streams (session events, mailboxes) the relay is serving right now.
    pub fn live_streams(&self) -> usize {
        self.running
            .as_ref()
            .expect("the relay is running")
            .relay
            .live_streams()
    }

    /// Waits until the relay serves exactly `n` streams. Session events are consumed when
    /// the relay pushes them, so before creating a session, wait until the streams of
    /// parties that stopped listening are gone from the relay: an event pushed to one of
    /// those would be lost with it.
    pub async fn wait_live_streams(&self, n: usize) {
        eventually(&format!("exactly {n} live streams"), || async {
            (self.live_streams() == n).then_some(())
        })
        .await
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

    /// Every file the relay keeps on disk (database, WAL, shared memory, ...), with its bytes.
    pub fn stored_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.data_dir()).expect("relay data dir") {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read a relay file");
                out.push((path, bytes));
            }
        }
        out
    }

    pub async fn coordinator(&self) -> Arc<Coordinator> {
        let client = Client::connect_with(
            &self.url(),
            COORDINATOR,
            self.coordinator_key(),
            fast_options(),
        )
        .await
        .expect("coordinator connects");
        assert!(client.is_coordinator(), "the test key is a coordinator key");
        Arc::new(Coordinator::new(client, self.coordinator_key()))
    }

    /// The coordinator enrolls `name` to `identity`, so that key alone may log in as it.
    pub async fn enroll(&self, name: &str, identity: &IdentityKey) {
        self.coordinator()
            .await
            .client()
            .enroll(name, &identity.public(), "")
            .await
            .unwrap_or_else(|e| panic!("enroll {name}: {e}"));
    }

    /// A new party with a new key store, enrolled and connected straight to the relay.
    pub async fn party(&self, name: &str) -> Party {
        self.party_via(name, &self.url()).await
    }

    /// A new party with a new key store, connected to `url` (a proxy in front of the relay).
    pub async fn party_via(&self, name: &str, url: &str) -> Party {
        let path = self.key_store_path(name);
        let mut store = KeyStore::create(&path, &key_store_secret()).expect("key store created");
        let identity = IdentityKey::generate();
        self.enroll(name, &identity).await;
        store
            .put("identity", &identity.to_bytes())
            .expect("identity stored");
        store
            .put(
                "encryption",
                EncryptionKeyPair::generate().secret_bytes().as_slice(),
            )
            .expect("encryption key stored");
        Party::connect(url, name, store, &self.trusted()).await
    }

    /// Party `name` started again from its key store on disk, as after a crash: a new
    /// process, a new client, the same identity.
    pub async fn reopen_party(&self, name: &str) -> Party {
        self.reopen_party_via(name, &self.url()).await
    }

    pub async fn reopen_party_via(&self, name: &str, url: &str) -> Party {
        let store = KeyStore::open(self.key_store_path(name), &key_store_secret())
            .expect("key store opens with its passphrase");
        Party::connect(url, name, store, &self.trusted()).await
    }
}

/// A party: its node (client + key store), its heartbeat, and its serve loop when serving.
pub struct Party {
    pub name: String,
    pub key_store: PathBuf,
    pub node: PartyNode,
    heartbeat: JoinHandle<()>,
    serving: Option<Serving>,
}

/// A session run in a task of its own: aborting it is a crash.
pub type SessionRun = JoinHandle<Result<(Outcome, Traffic), RunError>>;

struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RunError>>,
}

impl Party {
    async fn connect(url: &str, name: &str, store: KeyStore, trusted: &[[u8; 32]]) -> Party {
        let identity: [u8; 32] = store
            .get("identity")
            .and_then(|b| b.try_into().ok())
            .expect("key store holds a 32-byte identity key");
        let encryption = EncryptionKeyPair::from_secret_bytes(
            store
                .get("encryption")
                .expect("key store holds an encryption key"),
        )
        .expect("stored encryption key is valid");
        let client = Client::connect_with(
            url,
            name,
            IdentityKey::from_bytes(&identity),
            fast_options(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} connects to {url}: {e}"));
        client
            .register("persistent", "relay-tests", None)
            .await
            .unwrap_or_else(|e| panic!("{name} registers: {e}"));
        client
            .publish_encryption_key(&encryption)
            .await
            .unwrap_or_else(|e| panic!("{name} publishes its encryption key: {e}"));
        let heartbeat = client.spawn_heartbeat(Duration::from_secs(10));
        Party {
            name: name.to_string(),
            key_store: store.path().to_path_buf(),
            node: PartyNode::new(client, store, trusted.to_vec()),
            heartbeat,
            serving: None,
        }
    }

    /// Runs `node.serve` in the background, as `cohort party` does.
    pub fn serve(&mut self) {
        assert!(self.serving.is_none(), "{} already serves", self.name);
        let (stop, stop_rx) = watch::channel(false);
        let node = self.node.clone();
        let task = tokio::spawn(async move { node.serve(stop_rx).await });
        self.serving = Some(Serving { stop, task });
    }

    /// Ends the serve loop (sessions it started run on).
    pub async fn stop_serving(&mut self) {
        if let Some(Serving { stop, task }) = self.serving.take() {
            let _ = stop.send(true);
            finished(&format!("{}'s serve loop", self.name), task)
                .await
                .unwrap_or_else(|e| panic!("{}'s serve loop failed: {e}", self.name));
        }
    }

    /// Runs the next session this party is selected for, in a task the test can abort (a
    /// crash: nothing of it runs on).
    pub fn join_next(&self) -> SessionRun {
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut events = node.client().session_events(&[event_type::SESSION_CREATED]);
            loop {
                let event = events.next_event().await?;
                if let Some(token) = &event.join_token {
                    // Acknowledged, as `serve` does, so a later subscription does not get it again.
                    node.client().ack_event(&event).await?;
                    return node.run_session(&event.session_id, token).await;
                }
            }
        })
    }

    /// The key store as it is on disk now, opened a second time.
    pub fn stored(&self) -> KeyStore {
        KeyStore::open(&self.key_store, &key_store_secret()).expect("key store opens")
    }

    pub fn share(&self, group_public_key: &[u8]) -> KeyShare {
        self.node
            .share(group_public_key)
            .unwrap_or_else(|| panic!("{} holds a share of the key", self.name))
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some(serving) = self.serving.take() {
            serving.task.abort();
        }
    }
}

pub fn spawn_keygen(
    coordinator: &Arc<Coordinator>,
    parties: Vec<String>,
    t: u16,
    curve: Curve,
) -> JoinHandle<Result<KeygenResult, RunError>> {
    let c = coordinator.clone();
    tokio::spawn(async move { c.keygen(&parties, t, curve, SAFETY_NET).await })
}

pub fn spawn_sign(
    coordinator: &Arc<Coordinator>,
    group_public_key: &[u8],
    message: &[u8],
    signers: Option<Vec<String>>,
) -> JoinHandle<Result<SignResult, RunError>> {
    let c = coordinator.clone();
    let key = group_public_key.to_vec();
    let message = message.to_vec();
    tokio::spawn(async move {
        c.sign(&key, &message, "relay end-to-end test", signers, SAFETY_NET)
            .await
    })
}

/// The one session the relay has open (created, in progress), once the coordinator has
/// created it.
pub async fn open_session(coordinator: &Coordinator) -> String {
    eventually("the coordinator's session to be created", || async {
        let sessions = coordinator.client().list_sessions(None, 0).await.ok()?;
        let open: Vec<_> = sessions
            .into_iter()
            .filter(|s| s.status == "created" || s.status == "in_progress")
            .collect();
        assert!(open.len() <= 1, "tests run one session at a time");
        open.into_iter().next().map(|s| s.session_id)
    })
    .await
}

/// Keygen with every party serving; returns the group key after checking every party
/// stored a share of it.
pub async fn keygen_all_serving(
    coordinator: &Arc<Coordinator>,
    parties: &mut [&mut Party],
    t: u16,
    curve: Curve,
) -> Vec<u8> {
    for p in parties.iter_mut() {
        p.serve();
    }
    let names: Vec<String> = parties.iter().map(|p| p.name.clone()).collect();
    let key = finished("keygen", spawn_keygen(coordinator, names, t, curve))
        .await
        .unwrap_or_else(|e| panic!("keygen: {e}"));
    for p in parties.iter() {
        assert_eq!(
            p.share(&key.group_public_key)
                .group_public_key()
                .expect("group key"),
            key.group_public_key,
            "{} stored a share of the group key",
            p.name
        );
    }
    key.group_public_key
}

/// Checks a signature with a verifier that shares no code with FROST: ed25519-dalek for
/// Ed25519, k256's BIP-340 verifier for secp256k1-tr.
pub fn verify_independently(
    curve: Curve,
    group_public_key: &[u8],
    message_hash: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    match curve {
        Curve::Ed25519 => {
            let key: [u8; 32] = group_public_key
                .try_into()
                .map_err(|_| "group key is not 32 bytes".to_string())?;
            let sig: [u8; 64] = signature
                .try_into()
                .map_err(|_| "signature is not 64 bytes".to_string())?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| e.to_string())?;
            vk.verify_strict(message_hash, &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|e| e.to_string())
        }
        Curve::Secp256k1Tr => {
            let x_only = cohort_tss::bip340_public_key(group_public_key)
                .ok_or("group key is not a secp256k1 point")?;
            let vk = k256::schnorr::VerifyingKey::from_bytes(&x_only).map_err(|e| e.to_string())?;
            let sig = k256::schnorr::Signature::try_from(signature).map_err(|e| e.to_string())?;
            vk.verify_raw(message_hash, &sig).map_err(|e| e.to_string())
        }
    }
}

/// The secret scalar inside a key share (`KeyPackage::signing_share().serialize()`).
pub fn signing_share(share: &KeyShare) -> Vec<u8> {
    match share.curve {
        Curve::Ed25519 => share
            .packages::<Ed25519Sha512>()
            .expect("share parses")
            .0
            .signing_share()
            .serialize(),
        Curve::Secp256k1Tr => share
            .packages::<Secp256K1Sha256TR>()
            .expect("share parses")
            .0
            .signing_share()
            .serialize(),
    }
}

/// The two secret scalars of a persisted signing nonce (`Sign::nonce_bytes`).
pub fn nonce_scalars(curve: Curve, persisted: &[u8]) -> [Vec<u8>; 2] {
    fn of<C: cohort_tss::frost_core::Ciphersuite>(persisted: &[u8]) -> [Vec<u8>; 2] {
        let n = cohort_tss::frost_core::round1::SigningNonces::<C>::deserialize(persisted)
            .expect("persisted nonce parses");
        [n.hiding().serialize(), n.binding().serialize()]
    }
    match curve {
        Curve::Ed25519 => of::<Ed25519Sha512>(persisted),
        Curve::Secp256k1Tr => of::<Secp256K1Sha256TR>(persisted),
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    assert!(
        needle.len() >= 16,
        "search for secrets, not short common strings"
    );
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// A tampering relay: a gRPC proxy in front of the real relay for one party.

/// What the proxy does with one message on its way to the party behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The rewrite changed the message; it goes on.
    Altered,
    /// Not delivered (on this stream; the relay still holds it).
    Withheld,
}

/// Looks at (and may change) each message the party behind the proxy receives.
pub type Rewrite = Box<dyn FnMut(&mut MpcMessage) -> Verdict + Send>;

/// A message the proxy altered or withheld, as the relay had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alteration {
    pub message_id: String,
    pub from: String,
    pub round: i32,
    pub message_type: String,
    pub is_broadcast: bool,
    pub verdict: Verdict,
}

/// A gRPC proxy serving every service a `Client` uses (`mpc.router.v1.MessageRouter`, and
/// `cohort.v1` Auth, Sessions, Keys, Admin, Mailbox), forwarding each call with its
/// `authorization` header to the real relay, and passing each message delivered on
/// SubscribeMessages or a Mailbox stream through the current [`Rewrite`] on the way back.
pub struct TamperingRelay {
    pub addr: SocketAddr,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    log: Arc<Mutex<Vec<Alteration>>>,
    server: JoinHandle<()>,
}

impl TamperingRelay {
    pub async fn start(relay_url: &str) -> TamperingRelay {
        let upstream = Endpoint::from_shared(relay_url.to_string())
            .expect("relay url")
            .connect_lazy();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let rewrite: Arc<Mutex<Option<Rewrite>>> = Arc::default();
        let log: Arc<Mutex<Vec<Alteration>>> = Arc::default();
        let router = Forwarder {
            upstream: upstream.clone(),
            rewrite: rewrite.clone(),
            log: log.clone(),
        };
        let serve = tonic::transport::Server::builder()
            .add_service(MessageRouterServer::new(router.clone()))
            .add_service(MailboxServer::new(router))
            .add_service(AuthPassthrough(upstream.clone()))
            .add_service(SessionsPassthrough(upstream.clone()))
            .add_service(KeysPassthrough(upstream.clone()))
            .add_service(AdminPassthrough(upstream))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let server = tokio::spawn(async move {
            if let Err(e) = serve.await {
                panic!("tampering proxy stopped: {e}");
            }
        });
        TamperingRelay {
            addr,
            rewrite,
            log,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, every message to the party goes through `rewrite`.
    pub fn set(&self, rewrite: Rewrite) {
        *self.rewrite.lock().expect("proxy lock") = Some(rewrite);
    }

    /// From now on, messages pass untouched.
    pub fn clear(&self) {
        *self.rewrite.lock().expect("proxy lock") = None;
    }

    /// What the proxy altered or withheld so far.
    pub fn alterations(&self) -> Vec<Alteration> {
        self.log.lock().expect("proxy lock").clone()
    }
}

impl Drop for TamperingRelay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Forwarder {
    upstream: Channel,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    log: Arc<Mutex<Vec<Alteration>>>,
}

type Forwarded<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The same request for the upstream relay, carrying the caller's bearer token.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let authorization = request.metadata().get("authorization").cloned();
    let mut out = Request::new(request.into_inner());
    if let Some(a) = authorization {
        out.metadata_mut().insert("authorization", a);
    }
    out
}

impl Forwarder {
    fn router(&self) -> MessageRouterClient<Channel> {
        MessageRouterClient::new(self.upstream.clone())
    }

    /// Passes `m` through the current rewrite, logging what it did.
    fn verdict(&self, m: &mut MpcMessage) -> Verdict {
        judge(&self.rewrite, &self.log, m)
    }

    async fn tampered_mailbox(
        &self,
        request: Request<router::SubscribeMessagesRequest>,
    ) -> Result<Response<Forwarded<MpcMessage>>, Status> {
        let upstream = self
            .router()
            .subscribe_messages(forwarded(request))
            .await?
            .into_inner();
        let me = self.clone();
        let stream = upstream.filter_map(move |item| {
            let mut m = match item {
                Ok(m) => m,
                Err(status) => return Some(Err(status)),
            };
            (me.verdict(&mut m) != Verdict::Withheld).then_some(Ok(m))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn judge(
    rewrite: &Mutex<Option<Rewrite>>,
    log: &Mutex<Vec<Alteration>>,
    m: &mut MpcMessage,
) -> Verdict {
    let before = m.clone();
    let verdict = match rewrite.lock().expect("proxy lock").as_mut() {
        Some(f) => f(m),
        None => Verdict::Pass,
    };
    if verdict != Verdict::Pass {
        log.lock().expect("proxy lock").push(Alteration {
            message_id: before.message_id,
            from: before.from_party,
            round: before.round_number,
            message_type: before.message_type,
            is_broadcast: before.is_broadcast,
            verdict,
        });
    }
    verdict
}

/// The mailbox stream, forwarded both ways; each delivered message goes through the rewrite.
/// A withheld message's credit is granted back upstream, so the party's flow control is not
/// thrown off by what it never saw.
#[tonic::async_trait]
impl Mailbox for Forwarder {
    type OpenStream = Forwarded<ServerFrame>;

    async fn open(
        &self,
        request: Request<tonic::Streaming<ClientFrame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let authorization = request.metadata().get("authorization").cloned();
        let mut inbound = request.into_inner();
        let (up, up_rx) = mpsc::unbounded_channel::<ClientFrame>();
        let to_relay = up.clone();
        tokio::spawn(async move {
            while let Ok(Some(f)) = inbound.message().await {
                if to_relay.send(f).is_err() {
                    return;
                }
            }
        });
        let mut out = Request::new(UnboundedReceiverStream::new(up_rx));
        if let Some(a) = authorization {
            out.metadata_mut().insert("authorization", a);
        }
        let upstream = MailboxClient::new(self.upstream.clone())
            .open(out)
            .await?
            .into_inner();
        let me = self.clone();
        let stream = upstream.map(move |item| {
            let mut frame = item?;
            if let Some(server_frame::Frame::Delivery(d)) = &mut frame.frame {
                let session_id = d.session_id.clone();
                let mut withheld = 0u32;
                d.messages.retain_mut(|sm| {
                    let mut m = MpcMessage {
                        message_id: sm.message_id.clone(),
                        session_id: session_id.clone(),
                        from_party: sm.from_party.clone(),
                        is_broadcast: sm.is_broadcast,
                        round_number: sm.round,
                        message_type: sm.message_type.clone(),
                        payload: sm.payload.clone(),
                        created_at: sm.created_at,
                    };
                    if me.verdict(&mut m) == Verdict::Withheld {
                        withheld += 1;
                        return false;
                    }
                    sm.message_id = m.message_id;
                    sm.from_party = m.from_party;
                    sm.is_broadcast = m.is_broadcast;
                    sm.round = m.round_number;
                    sm.message_type = m.message_type;
                    sm.payload = m.payload;
                    sm.created_at = m.created_at;
                    true
                });
                if withheld > 0 {
                    let _ = up.send(ClientFrame {
                        frame: Some(client_frame::Frame::Credit(Credit {
                            session_id,
                            n: withheld,
                        })),
                    });
                }
            }
            Ok(frame)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

macro_rules! forwarding_router {
    ($($method:ident: $req:ident -> $resp:ident),* $(,)?) => {
        #[tonic::async_trait]
        impl MessageRouter for Forwarder {
            $(
                async fn $method(
                    &self,
                    request: Request<router::$req>,
                ) -> Result<Response<router::$resp>, Status> {
                    self.router().$method(forwarded(request)).await
                }
            )*

            type SubscribeMessagesStream = Forwarded<MpcMessage>;

            async fn subscribe_messages(
                &self,
                request: Request<router::SubscribeMessagesRequest>,
            ) -> Result<Response<Self::SubscribeMessagesStream>, Status> {
                self.tampered_mailbox(request).await
            }

            type SubscribeSessionEventsStream = Forwarded<router::SessionEvent>;

            async fn subscribe_session_events(
                &self,
                request: Request<router::SubscribeSessionEventsRequest>,
            ) -> Result<Response<Self::SubscribeSessionEventsStream>, Status> {
                let upstream = self
                    .router()
                    .subscribe_session_events(forwarded(request))
                    .await?
                    .into_inner();
                Ok(Response::new(Box::pin(upstream)))
            }
        }
    };
}

forwarding_router! {
    route_message: RouteMessageRequest -> RouteMessageResponse,
    get_pending_messages: GetPendingMessagesRequest -> GetPendingMessagesResponse,
    acknowledge_message: AcknowledgeMessageRequest -> AcknowledgeMessageResponse,
    get_message_status: GetMessageStatusRequest -> GetMessageStatusResponse,
    register_party: RegisterPartyRequest -> RegisterPartyResponse,
    heartbeat: HeartbeatRequest -> HeartbeatResponse,
    publish_session_event: PublishSessionEventRequest -> PublishSessionEventResponse,
    get_registered_parties: GetRegisteredPartiesRequest -> GetRegisteredPartiesResponse,
    join_session: JoinSessionRequest -> JoinSessionResponse,
    mark_party_ready: MarkPartyReadyRequest -> MarkPartyReadyResponse,
    report_completion: ReportCompletionRequest -> ReportCompletionResponse,
    get_session_status: GetSessionStatusRequest -> GetSessionStatusResponse,
    submit_delegate_share: SubmitDelegateShareRequest -> SubmitDelegateShareResponse,
}

/// Forwards a whole gRPC call, bytes untouched, to the upstream relay.
async fn pass_through(
    mut upstream: Channel,
    request: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    use tonic::codegen::Service;
    let answer = match std::future::poll_fn(|cx| upstream.poll_ready(cx)).await {
        Ok(()) => upstream.call(request).await,
        Err(e) => Err(e),
    };
    Ok(answer.unwrap_or_else(|e| {
        Status::unavailable(format!("tampering proxy: relay unreachable: {e}")).into_http()
    }))
}

macro_rules! passthrough {
    ($($ty:ident => $name:literal),* $(,)?) => {$(
        #[derive(Clone)]
        struct $ty(Channel);

        impl tonic::server::NamedService for $ty {
            const NAME: &'static str = $name;
        }

        impl tonic::codegen::Service<http::Request<tonic::body::Body>> for $ty {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
                Box::pin(pass_through(self.0.clone(), request))
            }
        }
    )*};
}

passthrough! {
    AuthPassthrough => "cohort.v1.Auth",
    SessionsPassthrough => "cohort.v1.Sessions",
    KeysPassthrough => "cohort.v1.Keys",
    AdminPassthrough => "cohort.v1.Admin",
}
