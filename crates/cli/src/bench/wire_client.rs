//! Just enough of a Cohort client for the bench, on the generated gRPC clients of
//! `cohort-wire`: enroll, log in, register, create and join sessions. The workloads call
//! `RouteMessage`, `SubscribeMessages` and `AcknowledgeMessage` themselves, so what is timed is
//! the wire path and nothing else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::directory_client::DirectoryClient;
use cohort_wire::cohort::sessions_client::SessionsClient;
use cohort_wire::cohort::{CreateSessionRequest, EnrollRequest, GetChallengeRequest, LoginRequest};
use cohort_wire::router::message_router_client::MessageRouterClient;
use cohort_wire::router::{JoinSessionRequest, NotificationChannel, RegisterPartyRequest};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Opens one HTTP/2 connection to the relay.
pub async fn connect(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("relay URL {url:?} is not a valid URL: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to the relay at {url}: {e}"))
}

/// Opens `n` connections.
pub async fn connect_many(url: &str, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(connect(url).await?);
    }
    Ok(out)
}

/// A logged-in party: its id and its `authorization` metadata.
#[derive(Clone)]
pub struct Credential {
    pub party_id: String,
    bearer: AsciiMetadataValue,
}

impl Credential {
    /// Wraps `msg` in a request that carries this party's bearer token.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", self.bearer.clone());
        r
    }
}

/// A gRPC error as one line that names the call.
pub fn failed(call: &str, s: &Status) -> String {
    format!("{call} failed: {:?}: {}", s.code(), s.message())
}

/// Challenge-response login (`cohort.v1.Auth`).
pub async fn login(
    channel: &Channel,
    party_id: &str,
    key: &IdentityKey,
) -> Result<Credential, String> {
    let mut auth = AuthClient::new(channel.clone());
    let c = auth
        .get_challenge(GetChallengeRequest {
            party_id: party_id.to_string(),
            public_key: key.public().to_vec(),
        })
        .await
        .map_err(|s| failed(&format!("GetChallenge for {party_id}"), &s))?
        .into_inner();
    let signature = key.sign(LOGIN_DOMAIN, &login_message(&c.challenge, party_id));
    let t = auth
        .login(LoginRequest {
            challenge_id: c.challenge_id,
            party_id: party_id.to_string(),
            public_key: key.public().to_vec(),
            signature: signature.to_vec(),
        })
        .await
        .map_err(|s| failed(&format!("Login of {party_id}"), &s))?
        .into_inner();
    let bearer = format!("Bearer {}", t.access_token)
        .parse()
        .map_err(|_| "the relay issued an access token that is not ASCII".to_string())?;
    Ok(Credential {
        party_id: party_id.to_string(),
        bearer,
    })
}

/// RegisterParty. `offline`: with a notification channel, which puts the party in offline
/// mode (its sessions then stall only after 24 h instead of 60 s).
pub async fn register(channel: &Channel, who: &Credential, offline: bool) -> Result<(), String> {
    let mut router = MessageRouterClient::new(channel.clone());
    router
        .register_party(who.request(RegisterPartyRequest {
            party_id: who.party_id.clone(),
            party_role: "persistent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            notification: offline.then(|| NotificationChannel {
                push_token: format!("bench-{}", who.party_id),
                ..Default::default()
            }),
        }))
        .await
        .map_err(|s| failed(&format!("RegisterParty of {}", who.party_id), &s))?;
    Ok(())
}

/// Enroll (`cohort.v1.Directory`): `coordinator` binds `party_id` to `key`.
pub async fn enroll_key(
    channel: &Channel,
    coordinator: &Credential,
    party_id: &str,
    key: &IdentityKey,
) -> Result<(), String> {
    DirectoryClient::new(channel.clone())
        .enroll(coordinator.request(EnrollRequest {
            party_id: party_id.to_string(),
            identity_key: key.public().to_vec(),
            role: String::new(),
        }))
        .await
        .map_err(|s| failed(&format!("Enroll of {party_id}"), &s))?;
    Ok(())
}

/// Enrolls (as `coordinator`), logs in and registers one fresh identity per id, `parallel`
/// at a time, spreading the calls over `channels`. `done` is called after each party.
pub async fn enroll(
    channels: &[Channel],
    coordinator: &Credential,
    ids: Vec<String>,
    offline: bool,
    parallel: usize,
    done: Arc<dyn Fn() + Send + Sync>,
) -> Result<Vec<Credential>, String> {
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let channel = channels[i % channels.len()].clone();
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "enrolment was cancelled")?;
        let done = done.clone();
        let coordinator = coordinator.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let key = IdentityKey::generate();
            enroll_key(&channel, &coordinator, &id, &key).await?;
            let cred = login(&channel, &id, &key).await?;
            register(&channel, &cred, offline).await?;
            done();
            Ok::<_, String>((i, cred))
        });
    }
    let mut out: Vec<Option<Credential>> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (i, cred) = r.map_err(|e| format!("an enrolment task failed: {e}"))??;
        if out.len() <= i {
            out.resize(i + 1, None);
        }
        out[i] = Some(cred);
    }
    out.into_iter()
        .map(|c| c.ok_or_else(|| "a party was not enrolled".to_string()))
        .collect()
}

/// A session the coordinator created.
pub struct CreatedSession {
    pub id: String,
    pub join_tokens: HashMap<String, String>,
}

/// CreateSession (coordinator only) with explicit parties, t = 1.
pub async fn create_session(
    channel: &Channel,
    coordinator: &Credential,
    parties: Vec<String>,
    ttl: Duration,
) -> Result<CreatedSession, String> {
    let mut sessions = SessionsClient::new(channel.clone());
    let n = i32::try_from(parties.len()).map_err(|_| "too many parties")?;
    let r = sessions
        .create_session(coordinator.request(CreateSessionRequest {
            session_type: "bench".into(),
            threshold_n: n,
            threshold_t: 1,
            parties,
            expires_in_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            ..Default::default()
        }))
        .await
        .map_err(|s| failed("CreateSession", &s))?
        .into_inner();
    Ok(CreatedSession {
        id: r.session_id,
        join_tokens: r.join_tokens,
    })
}

/// JoinSession with the party's own join token.
pub async fn join(
    channel: &Channel,
    who: &Credential,
    session: &CreatedSession,
) -> Result<(), String> {
    let token = session
        .join_tokens
        .get(&who.party_id)
        .ok_or_else(|| format!("CreateSession returned no join token for {}", who.party_id))?;
    MessageRouterClient::new(channel.clone())
        .join_session(who.request(JoinSessionRequest {
            session_id: session.id.clone(),
            party_id: who.party_id.clone(),
            join_token: token.clone(),
            device_info: None,
        }))
        .await
        .map_err(|s| failed(&format!("JoinSession of {}", who.party_id), &s))?;
    Ok(())
}

/// Logs the coordinator in under an id derived from its key (a coordinator key binds a free
/// id at its first login, so a fixed id would clash across relays and keys).
pub async fn login_coordinator(channel: &Channel, key: &IdentityKey) -> Result<Credential, String> {
    let id = format!("bench-coordinator-{}", hex::encode(&key.public()[..6]));
    login(channel, &id, key).await
}

/// A random prefix for this run's party ids, so runs against one relay never collide.
pub fn run_prefix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("b{}", hex::encode(b))
}
