//! Test harness: a real relay (`cohort_server::start`) on 127.0.0.1:0 over a real SQLite file
//! in a temporary directory, plus helpers to log parties in and set sessions up over gRPC.
#![allow(dead_code)] // each test file uses its own subset

pub mod client;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cohort_crypto::identity::IdentityKey;
use cohort_server::{Config, Running};
use cohort_wire::cohort::CreateSessionRequest;
use cohort_wire::router::{
    JoinSessionRequest, MarkPartyReadyRequest, RegisterPartyRequest, RouteMessageRequest,
    SessionEvent, SubscribeMessagesRequest, SubscribeSessionEventsRequest,
};
use tonic::transport::Channel;
use tonic::Streaming;

pub use client::*;

/// The party id the coordinator logs in with.
pub const COORDINATOR: &str = "coordinator";

/// A server config for tests: loopback on a free port, no metrics, the given data directory,
/// and `coordinator` as the only coordinator key.
pub fn config(data_dir: &Path, coordinator: &IdentityKey) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("loopback address"),
        metrics_addr: None,
        coordinator_keys: vec![hex::encode(coordinator.public())],
        ..Config::default()
    }
}

/// A running relay over a fresh data directory, and a channel to it.
pub struct Relay {
    pub dir: tempfile::TempDir,
    pub server: Option<Running>,
    pub channel: Channel,
    coordinator_secret: [u8; 32],
}

impl Relay {
    pub async fn start() -> Relay {
        Relay::start_with(|_| {}).await
    }

    /// Starts with the test config changed by `tweak` (limits, sweep interval ...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Relay {
        let dir = tempfile::tempdir().expect("temp dir");
        let coordinator = IdentityKey::generate();
        let mut cfg = config(dir.path(), &coordinator);
        tweak(&mut cfg);
        let server = cohort_server::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("relay did not start: {e}"));
        let channel = connect(server.grpc_addr).await;
        Relay {
            dir,
            server: Some(server),
            channel,
            coordinator_secret: coordinator.to_bytes(),
        }
    }

    pub fn coordinator_key(&self) -> IdentityKey {
        IdentityKey::from_bytes(&self.coordinator_secret)
    }

    /// Logs the coordinator in (its key is in the config's coordinator keys).
    pub async fn coordinator(&self) -> Party {
        let p = login(&self.channel, COORDINATOR, self.coordinator_key()).await;
        assert!(
            p.coordinator,
            "the configured key must get the coordinator role"
        );
        p
    }

    /// Enrolls `id` to a fresh identity key (as the coordinator) and logs it in.
    pub async fn party(&self, id: &str) -> Party {
        let key = IdentityKey::generate();
        self.enroll(id, &key).await;
        let p = login(&self.channel, id, key).await;
        assert!(!p.coordinator);
        p
    }

    /// The coordinator enrolls `id` to `key` (Directory/Enroll), so `key` may log in as it.
    pub async fn enroll(&self, id: &str, key: &IdentityKey) {
        enroll(&self.coordinator().await, id, key).await;
    }

    /// Logs a new party in and registers it with `role`.
    pub async fn registered(&self, id: &str, role: &str) -> Party {
        let p = self.party(id).await;
        register(&p, role).await;
        p
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }
}

pub async fn register(p: &Party, role: &str) {
    let r = p
        .router()
        .register_party(RegisterPartyRequest {
            party_id: p.id.clone(),
            party_role: role.into(),
            version: "test/1".into(),
            notification: None,
        })
        .await
        .expect("RegisterParty")
        .into_inner();
    assert!(r.success);
}

/// A session as its creator got it back.
pub struct Created {
    pub session_id: String,
    pub join_tokens: HashMap<String, String>,
}

/// CreateSession of type `keygen` with explicit parties and t = 2 (or n when n < 2).
pub async fn create_session(coordinator: &Party, parties: &[&Party]) -> Created {
    create_session_with(coordinator, parties, |_| {}).await
}

pub async fn create_session_with(
    coordinator: &Party,
    parties: &[&Party],
    tweak: impl FnOnce(&mut CreateSessionRequest),
) -> Created {
    let n = parties.len() as i32;
    let mut req = CreateSessionRequest {
        session_type: "keygen".into(),
        threshold_n: n,
        threshold_t: n.min(2),
        parties: parties.iter().map(|p| p.id.clone()).collect(),
        ..Default::default()
    };
    tweak(&mut req);
    let r = coordinator
        .sessions()
        .create_session(req)
        .await
        .expect("CreateSession")
        .into_inner();
    Created {
        session_id: r.session_id,
        join_tokens: r.join_tokens,
    }
}

pub async fn join(p: &Party, session: &Created) {
    let r = p
        .router()
        .join_session(JoinSessionRequest {
            session_id: session.session_id.clone(),
            party_id: p.id.clone(),
            join_token: session.join_tokens[&p.id].clone(),
            device_info: None,
        })
        .await
        .unwrap_or_else(|e| panic!("JoinSession of {}: {e}", p.id))
        .into_inner();
    assert!(r.success);
}

/// Joins every party and marks each ready; the session is then in progress.
pub async fn join_all_ready(parties: &[&Party], session: &Created) {
    for p in parties {
        join(p, session).await;
    }
    for p in parties {
        p.router()
            .mark_party_ready(MarkPartyReadyRequest {
                session_id: session.session_id.clone(),
                party_id: p.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("MarkPartyReady of {}: {e}", p.id));
    }
}

/// RouteMessage from `from` to `to` (empty: broadcast); returns the message id.
pub async fn route(
    from: &Party,
    session_id: &str,
    to: &[&str],
    round: i32,
    payload: &[u8],
) -> String {
    let r = from
        .router()
        .route_message(RouteMessageRequest {
            session_id: session_id.into(),
            from_party: from.id.clone(),
            to_parties: to.iter().map(|s| s.to_string()).collect(),
            round_number: round,
            message_type: format!("round{round}"),
            payload: payload.to_vec(),
        })
        .await
        .unwrap_or_else(|e| panic!("RouteMessage from {}: {e}", from.id))
        .into_inner();
    assert!(r.success);
    assert!(!r.message_id.is_empty());
    r.message_id
}

pub async fn subscribe_messages(
    p: &Party,
    session_id: &str,
) -> Streaming<cohort_wire::router::MpcMessage> {
    p.router()
        .subscribe_messages(SubscribeMessagesRequest {
            session_id: session_id.into(),
            party_id: p.id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("SubscribeMessages of {}: {e}", p.id))
        .into_inner()
}

pub async fn subscribe_events(p: &Party, types: &[&str]) -> Streaming<SessionEvent> {
    p.router()
        .subscribe_session_events(SubscribeSessionEventsRequest {
            party_id: p.id.clone(),
            event_types: types.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("SubscribeSessionEvents of {}: {e}", p.id))
        .into_inner()
}

/// Reads events until one of `event_type` for `session_id` arrives, and returns it.
pub async fn next_event(
    stream: &mut Streaming<SessionEvent>,
    event_type: &str,
    session_id: &str,
) -> SessionEvent {
    loop {
        let e = next(stream).await;
        if e.event_type == event_type && e.session_id == session_id {
            return e;
        }
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most 10 s (a safety net: the
/// tests assert on the value, never on how long it took).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The session as GetSession shows it to `p`.
pub async fn get_session(p: &Party, session_id: &str) -> cohort_wire::cohort::SessionSummary {
    p.sessions()
        .get_session(cohort_wire::cohort::GetSessionRequest {
            session_id: session_id.into(),
        })
        .await
        .expect("GetSession")
        .into_inner()
}
