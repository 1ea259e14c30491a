//! Client side of the integration tests: log a party in over real gRPC and build tonic clients
//! that send its bearer token. Shared by `crates/server/tests` and `crates/cli/tests` (included
//! there by `#[path]`), so it knows nothing of the server's internals, only the wire.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_crypto::identity::{
    encryption_key_message, login_message, IdentityKey, ENCRYPTION_KEY_DOMAIN, LOGIN_DOMAIN,
};
use cohort_wire::cohort::admin_client::AdminClient;
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::directory_client::DirectoryClient;
use cohort_wire::cohort::keys_client::KeysClient;
use cohort_wire::cohort::sessions_client::SessionsClient;
use cohort_wire::cohort::{EnrollRequest, GetChallengeRequest, LoginRequest};
use cohort_wire::router::message_router_client::MessageRouterClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

/// Safety net around every stream read: a test that waits longer than this has failed.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one HTTP/2 channel to a relay; every client of a test shares it.
pub async fn connect(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the relay at {addr}: {e}"))
}

/// Inserts `authorization: <value>` into every request. `value` is normally `Bearer <token>`,
/// and anything else in the tests of malformed credentials.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn token(token: &str) -> Self {
        Self::raw(&format!("Bearer {token}"))
    }
    pub fn raw(value: &str) -> Self {
        Bearer(value.parse().expect("ASCII metadata value"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// Clients of every authenticated service, all sending `bearer`.
pub fn router_with(channel: &Channel, bearer: Bearer) -> MessageRouterClient<Authed> {
    MessageRouterClient::with_interceptor(channel.clone(), bearer)
}
pub fn sessions_with(channel: &Channel, bearer: Bearer) -> SessionsClient<Authed> {
    SessionsClient::with_interceptor(channel.clone(), bearer)
}
pub fn keys_with(channel: &Channel, bearer: Bearer) -> KeysClient<Authed> {
    KeysClient::with_interceptor(channel.clone(), bearer)
}
pub fn admin_with(channel: &Channel, bearer: Bearer) -> AdminClient<Authed> {
    AdminClient::with_interceptor(channel.clone(), bearer)
}
pub fn directory_with(channel: &Channel, bearer: Bearer) -> DirectoryClient<Authed> {
    DirectoryClient::with_interceptor(channel.clone(), bearer)
}

/// A logged-in party: its id, identity key and access token.
pub struct Party {
    pub id: String,
    pub key: IdentityKey,
    pub token: String,
    pub coordinator: bool,
    pub token_expires_at: i64,
    pub channel: Channel,
}

impl Party {
    pub fn bearer(&self) -> Bearer {
        Bearer::token(&self.token)
    }
    pub fn router(&self) -> MessageRouterClient<Authed> {
        router_with(&self.channel, self.bearer())
    }
    pub fn sessions(&self) -> SessionsClient<Authed> {
        sessions_with(&self.channel, self.bearer())
    }
    pub fn keys(&self) -> KeysClient<Authed> {
        keys_with(&self.channel, self.bearer())
    }
    pub fn admin(&self) -> AdminClient<Authed> {
        admin_with(&self.channel, self.bearer())
    }
    pub fn directory(&self) -> DirectoryClient<Authed> {
        directory_with(&self.channel, self.bearer())
    }
    /// The signature `PublishEncryptionKey` wants over `encryption_key`.
    pub fn sign_encryption_key(&self, encryption_key: &[u8]) -> Vec<u8> {
        self.key
            .sign(
                ENCRYPTION_KEY_DOMAIN,
                &encryption_key_message(&self.id, encryption_key),
            )
            .to_vec()
    }
}

/// Challenge-response login of `party_id` with `key`, as `cohort.v1.Auth` defines it.
pub async fn login(channel: &Channel, party_id: &str, key: IdentityKey) -> Party {
    let mut auth = AuthClient::new(channel.clone());
    let challenge = auth
        .get_challenge(GetChallengeRequest {
            party_id: party_id.into(),
            public_key: key.public().to_vec(),
        })
        .await
        .unwrap_or_else(|e| panic!("GetChallenge for {party_id}: {e}"))
        .into_inner();
    let signature = key.sign(LOGIN_DOMAIN, &login_message(&challenge.challenge, party_id));
    let answer = auth
        .login(LoginRequest {
            challenge_id: challenge.challenge_id,
            party_id: party_id.into(),
            public_key: key.public().to_vec(),
            signature: signature.to_vec(),
        })
        .await
        .unwrap_or_else(|e| panic!("Login of {party_id}: {e}"))
        .into_inner();
    Party {
        id: party_id.into(),
        key,
        token: answer.access_token,
        coordinator: answer.coordinator,
        token_expires_at: answer.expires_at,
        channel: channel.clone(),
    }
}

/// `coordinator` enrolls `id` to `key` (Directory/Enroll), so `key` may log in as it.
pub async fn enroll(coordinator: &Party, id: &str, key: &IdentityKey) {
    coordinator
        .directory()
        .enroll(EnrollRequest {
            party_id: id.into(),
            identity_key: key.public().to_vec(),
            role: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("Enroll of {id}: {e}"));
}

/// The next item of a server stream; panics if the stream fails, ends, or stays silent for
/// [`STREAM_TIMEOUT`].
pub async fn next<T>(stream: &mut Streaming<T>) -> T {
    match tokio::time::timeout(STREAM_TIMEOUT, stream.message()).await {
        Err(_) => panic!("no stream item within {STREAM_TIMEOUT:?}"),
        Ok(Err(status)) => panic!("stream failed: {status}"),
        Ok(Ok(None)) => panic!("stream ended"),
        Ok(Ok(Some(item))) => item,
    }
}

/// Asserts that a call was refused with `code` and that the status message mentions `needle`.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "wrong code; message: {:?}",
                status.message()
            );
            assert!(
                status.message().contains(needle),
                "{code:?} message {:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}
