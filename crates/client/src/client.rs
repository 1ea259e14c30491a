//! [`Client`]: one party's authenticated connection to a relay, and the call discipline every
//! RPC goes through (bearer token, re-login on an expired token, bounded retries while the
//! relay is unavailable).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_crypto::seal::EncryptionKeyPair;
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::directory_client::DirectoryClient;
use cohort_wire::cohort::keys_client::KeysClient;
use cohort_wire::cohort::mailbox_client::MailboxClient;
use cohort_wire::cohort::sessions_client::SessionsClient;
use cohort_wire::cohort::{GetChallengeRequest, LoginRequest};
use cohort_wire::router::message_router_client::MessageRouterClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::link::Link;

/// Tuning for a [`Client`]. The defaults suit a party on a LAN or the internet.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How many times a call is tried while the relay answers UNAVAILABLE (restarting,
    /// unreachable) before the error is returned. Streams retry without limit.
    pub call_attempts: u32,
    /// First delay between retries; it doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long to wait for a TCP connection to the relay.
    pub connect_timeout: Duration,
    /// How long to wait for the answer to one unary call.
    pub request_timeout: Duration,
    /// How many message ids an [`crate::Inbox`] remembers to drop redeliveries.
    pub seen_capacity: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_attempts: 10,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            seen_capacity: 65_536,
        }
    }
}

/// A party's connection to a Cohort relay: logged in, cheap to clone, safe to share between
/// tasks. Every call carries the bearer token; when the relay says the token expired, the
/// client logs in again and repeats the call once. While the relay is unavailable (restarting),
/// calls are retried a bounded number of times with backoff, and streams reconnect until
/// they are dropped.
///
/// ```no_run
/// use cohort_client::Client;
/// use cohort_crypto::identity::IdentityKey;
///
/// # async fn run() -> Result<(), cohort_client::ClientError> {
/// let client = Client::connect("http://127.0.0.1:50051", "alice", IdentityKey::generate()).await?;
/// client.register("persistent", "1.0.0", None).await?;
/// let _heartbeat = client.spawn_heartbeat(std::time::Duration::from_secs(10));
/// client.generate_encryption_key().await?;
///
/// let mut events = client.session_events(&["session_created"]);
/// let event = events.next_event().await?;
/// if let Some(token) = &event.join_token {
///     let info = client.join(&event.session_id, token).await?;
///     client.ready(&event.session_id).await?;
///     let mut session = client.secure_session(&event.session_id)?;
///     session.send_sealed(None, 1, "hello", b"my index is known").await?;
///     let opened = session.recv_opened().await?;
///     session.ack(&opened.message_id).await?;
///     println!("party {} of {}: {:?}", info.party_index, info.n, opened.body);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) url: String,
    pub(crate) party_id: String,
    pub(crate) identity: IdentityKey,
    pub(crate) options: ClientOptions,
    channel: Channel,
    bearer: Bearer,
    /// One login at a time; callers that saw the same expired token share one re-login.
    login_lock: tokio::sync::Mutex<()>,
    coordinator: AtomicBool,
    pub(crate) encryption_key: RwLock<Option<EncryptionKeyPair>>,
    /// Identity keys seen for each party: a relay cannot swap one later.
    pub(crate) identities: Mutex<HashMap<String, [u8; 32]>>,
    /// The mailbox stream every send, ack and Inbox goes over, opened at first use.
    link: OnceLock<Link>,
}

/// The current bearer token, shared with the interceptor that puts it on every request.
#[derive(Clone, Default)]
pub(crate) struct Bearer(Arc<RwLock<TokenState>>);

#[derive(Default)]
pub(crate) struct TokenState {
    header: Option<MetadataValue<Ascii>>,
    /// Bumped at each login, so concurrent callers re-login once, not once each.
    generation: u64,
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let state = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = &state.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// Retried by streams without limit; anything else ends the stream with an error.
pub(crate) fn is_transient(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Internal
                | Code::ResourceExhausted
        )
    )
}

/// Whether a unary call may be tried again: the relay is unavailable, or the connection
/// broke under the call (a relay shutting down resets its HTTP/2 connections, which tonic
/// reports as INTERNAL/UNKNOWN "h2 protocol error" or "transport error"). Errors the relay
/// itself answered with are never retried.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Internal | Code::Unknown | Code::Cancelled => {
            // The cause is often only in the source chain ("operation was canceled" caused
            // by "transport error: connection closed").
            let m = crate::error::status_message(status);
            m.contains("h2 protocol error")
                || m.contains("transport error")
                || m.contains("connection")
        }
        _ => false,
    }
}

fn normalize_url(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    if !full.starts_with("http://") {
        return Err(ClientError::InvalidUrl {
            url: url.to_string(),
            reason: "this SDK speaks plaintext HTTP/2 (http://host:port); put TLS in front of the relay with a proxy or tunnel".into(),
        });
    }
    Ok(full)
}

impl Client {
    /// Connects to the relay at `url` (`http://host:port`; a bare `host:port` is accepted) and
    /// logs in as `party_id` with `identity`. The relay admits the key under a party id a
    /// coordinator enrolled to it ([`Client::enroll`]), or under the key's own id
    /// ([`cohort_crypto::identity::key_party_id`]); a relay run with open enrollment also
    /// binds a free id to the first key that logs in with it.
    pub async fn connect(
        url: &str,
        party_id: &str,
        identity: IdentityKey,
    ) -> Result<Client, ClientError> {
        Self::connect_with(url, party_id, identity, ClientOptions::default()).await
    }

    /// [`Client::connect`] with explicit [`ClientOptions`].
    pub async fn connect_with(
        url: &str,
        party_id: &str,
        identity: IdentityKey,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let url = normalize_url(url)?;
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| ClientError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        // Keepalive pings notice a dead connection (relay host gone) so streams reconnect.
        let channel = endpoint
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let mut identities = HashMap::new();
        identities.insert(party_id.to_string(), identity.public());
        let client = Client {
            inner: Arc::new(Inner {
                url,
                party_id: party_id.to_string(),
                identity,
                options,
                channel,
                bearer: Bearer::default(),
                login_lock: tokio::sync::Mutex::new(()),
                coordinator: AtomicBool::new(false),
                encryption_key: RwLock::new(None),
                identities: Mutex::new(identities),
                link: OnceLock::new(),
            }),
        };
        client.login().await?;
        Ok(client)
    }

    /// The relay URL this client talks to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn party_id(&self) -> &str {
        &self.inner.party_id
    }

    /// This party's Ed25519 identity public key.
    pub fn identity_public(&self) -> [u8; 32] {
        self.inner.identity.public()
    }

    /// Whether the relay granted this identity the coordinator role at the last login.
    pub fn is_coordinator(&self) -> bool {
        self.inner.coordinator.load(Ordering::Relaxed)
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub(crate) fn router(&self) -> MessageRouterClient<Authed> {
        MessageRouterClient::with_interceptor(self.inner.channel.clone(), self.inner.bearer.clone())
    }

    pub(crate) fn sessions_rpc(&self) -> SessionsClient<Authed> {
        SessionsClient::with_interceptor(self.inner.channel.clone(), self.inner.bearer.clone())
    }

    pub(crate) fn keys_rpc(&self) -> KeysClient<Authed> {
        KeysClient::with_interceptor(self.inner.channel.clone(), self.inner.bearer.clone())
    }

    pub(crate) fn directory_rpc(&self) -> DirectoryClient<Authed> {
        DirectoryClient::with_interceptor(self.inner.channel.clone(), self.inner.bearer.clone())
    }

    pub(crate) fn mailbox_rpc(&self) -> MailboxClient<Authed> {
        MailboxClient::with_interceptor(self.inner.channel.clone(), self.inner.bearer.clone())
    }

    /// The mailbox stream, started at first use.
    pub(crate) fn link(&self) -> &Link {
        self.inner.link.get_or_init(|| {
            Link::spawn(
                Arc::downgrade(&self.inner),
                self.inner.url.clone(),
                self.inner.party_id.clone(),
                self.inner.options.clone(),
            )
        })
    }

    pub(crate) fn token_generation(&self) -> u64 {
        self.inner
            .bearer
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Logs in: GetChallenge, sign it, Login; installs the new token.
    async fn login(&self) -> Result<(), ClientError> {
        let party_id = self.inner.party_id.clone();
        // A challenge is single use: if a Login attempt reached the relay but its answer was
        // lost, the retry is refused as "already used". One fresh challenge covers that.
        let mut fresh_challenges = 1;
        let login = loop {
            match self.login_once().await {
                Err(e) if e.code() == Some(Code::Unauthenticated) && fresh_challenges > 0 => {
                    fresh_challenges -= 1;
                    tracing::debug!(party = %party_id, error = %e, "login refused; trying a fresh challenge");
                }
                other => break other?,
            }
        };
        let header: MetadataValue<Ascii> = format!("Bearer {}", login.access_token)
            .parse()
            .map_err(|_| {
                ClientError::bad_response(
                    &self.inner.url,
                    "Auth/Login",
                    "access token is not printable ASCII",
                )
            })?;
        {
            let mut state = self
                .inner
                .bearer
                .0
                .write()
                .unwrap_or_else(|p| p.into_inner());
            state.header = Some(header);
            state.generation = state.generation.wrapping_add(1);
        }
        self.inner
            .coordinator
            .store(login.coordinator, Ordering::Relaxed);
        tracing::debug!(party = %party_id, relay = %self.inner.url, coordinator = login.coordinator, "logged in");
        Ok(())
    }

    /// GetChallenge, sign it, Login.
    async fn login_once(&self) -> Result<cohort_wire::cohort::LoginResponse, ClientError> {
        let party_id = self.inner.party_id.clone();
        let public_key = self.inner.identity.public().to_vec();
        let auth = AuthClient::new(self.inner.channel.clone());
        let challenge = self
            .call_with_retries("Auth/GetChallenge", &mut || {
                let mut auth = auth.clone();
                let req = GetChallengeRequest {
                    party_id: party_id.clone(),
                    public_key: public_key.clone(),
                };
                async move { auth.get_challenge(req).await }
            })
            .await?;
        let signature = self
            .inner
            .identity
            .sign(
                LOGIN_DOMAIN,
                &login_message(&challenge.challenge, &party_id),
            )
            .to_vec();
        self.call_with_retries("Auth/Login", &mut || {
            let mut auth = auth.clone();
            let req = LoginRequest {
                challenge_id: challenge.challenge_id.clone(),
                party_id: party_id.clone(),
                public_key: public_key.clone(),
                signature: signature.clone(),
            };
            async move { auth.login(req).await }
        })
        .await
    }

    /// Logs in again unless another caller already did since `seen_generation`.
    pub(crate) async fn relogin(&self, seen_generation: u64) -> Result<(), ClientError> {
        let _one_at_a_time = self.inner.login_lock.lock().await;
        if self.token_generation() != seen_generation {
            return Ok(());
        }
        tracing::info!(party = %self.inner.party_id, relay = %self.inner.url, "access token refused; logging in again");
        self.login().await
    }

    /// Runs one authenticated unary call (or stream opening): on UNAUTHENTICATED (the token
    /// expired) logs in again and repeats it once; retries while the relay is unavailable.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        rpc: &'static str,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut relogged = false;
        loop {
            let generation = self.token_generation();
            match self.call_with_retries(rpc, &mut attempt).await {
                Err(e) if e.code() == Some(Code::Unauthenticated) && !relogged => {
                    relogged = true;
                    self.relogin(generation).await?;
                }
                other => return other,
            }
        }
    }

    /// Runs a call, retrying with backoff while the relay answers UNAVAILABLE, at most
    /// `call_attempts` times.
    async fn call_with_retries<T, F, Fut>(
        &self,
        rpc: &'static str,
        attempt: &mut F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let options = &self.inner.options;
        let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let status = match tokio::time::timeout(options.request_timeout, attempt()).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    options.request_timeout
                )),
            };
            if retryable(&status) && attempts < options.call_attempts.max(1) {
                tracing::debug!(rpc, relay = %self.inner.url, attempt = attempts, error = %status.message(), "relay unavailable; retrying");
                backoff.wait().await;
                continue;
            }
            return Err(ClientError::rpc(&self.inner.url, rpc, &status));
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("party_id", &self.inner.party_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme_get_http_and_https_is_refused_with_the_fix() {
        assert_eq!(
            normalize_url("127.0.0.1:50051").ok().as_deref(),
            Some("http://127.0.0.1:50051")
        );
        assert_eq!(
            normalize_url("http://relay:1").ok().as_deref(),
            Some("http://relay:1")
        );
        let e = normalize_url("https://relay:1").unwrap_err().to_string();
        assert!(
            e.contains("https://relay:1") && e.contains("http://"),
            "{e}"
        );
    }
}
