//! Rate limits per identity and per address over real gRPC: a burst past a limit is refused
//! with RESOURCE_EXHAUSTED, a `retry-after-ms` hint and the limit's name; waiting that long
//! is enough to be served again; other parties and addresses are not affected; refusals are
//! counted. And a challenge flood keeps the challenge table under its cap.

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cohort_core::store::{StoreExt, Table};
use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_server::Config;
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::{GetChallengeRequest, LoginRequest};
use cohort_wire::router::{HeartbeatRequest, SubscribeSessionEventsRequest};
use common::*;
use tonic::{Code, Status};

/// Every rate limit off, for tests that turn on only the one they check.
fn no_rate_limits(c: &mut Config) {
    c.limits.calls_per_second_per_address = 0;
    c.limits.calls_per_second_per_identity = 0;
    c.limits.challenges_per_second_per_address = 0;
    c.limits.logins_per_second_per_address = 0;
    c.limits.sessions_per_second_per_identity = 0;
    c.limits.routes_per_second_per_identity = 0;
    c.limits.streams_per_second_per_identity = 0;
}

/// Calls `call` until it is refused with RESOURCE_EXHAUSTED (other outcomes count as
/// admitted), at most 500 times; returns the refusal and how many calls went first.
async fn burst_until_refused<T, F, Fut>(what: &str, mut call: F) -> (Status, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    for admitted in 0..500 {
        if let Err(s) = call().await {
            if s.code() == Code::ResourceExhausted {
                return (s, admitted);
            }
        }
    }
    panic!("{what}: 500 calls in a burst and none refused");
}

/// The `retry-after-ms` of a refusal, checked against its message and the limit's name.
#[track_caller]
fn retry_hint(refusal: &Status, setting: &str) -> Duration {
    let ms: u64 = refusal
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after-ms in {refusal:?}"));
    let m = refusal.message();
    assert!(m.contains(setting), "{m:?} names {setting}");
    assert!(
        m.contains(&format!("retry in {ms} ms")),
        "{m:?} gives the hint"
    );
    assert!(
        ms > 0 && ms <= 1001,
        "at 5 per second the wait is at most 200 ms: {ms}"
    );
    Duration::from_millis(ms)
}

fn get_challenge(
    channel: &tonic::transport::Channel,
    id: &str,
) -> impl Future<Output = Result<tonic::Response<cohort_wire::cohort::GetChallengeResponse>, Status>>
{
    let mut auth = AuthClient::new(channel.clone());
    let req = GetChallengeRequest {
        party_id: id.into(),
        public_key: IdentityKey::generate().public().to_vec(),
    };
    async move { auth.get_challenge(req).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_address_trip_with_a_hint_and_recover() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        no_rate_limits(c);
        c.limits.challenges_per_second_per_address = 5;
        c.limits.logins_per_second_per_address = 5;
    })
    .await;
    let ch = relay.channel.clone();

    let (refusal, admitted) =
        burst_until_refused("GetChallenge", || get_challenge(&ch, "alice")).await;
    assert!(
        admitted >= 5,
        "the burst of 5 is admitted first ({admitted})"
    );
    let wait = retry_hint(&refusal, "challenges_per_second_per_address");
    tokio::time::sleep(wait).await;
    get_challenge(&ch, "alice")
        .await
        .expect("GetChallenge after the hint");

    // Login: bad answers are UNAUTHENTICATED until the rate is reached.
    let mut auth = AuthClient::new(ch.clone());
    let (refusal, _) = burst_until_refused("Login", || {
        let mut auth = auth.clone();
        async move {
            auth.login(LoginRequest {
                challenge_id: "00".repeat(32),
                party_id: "alice".into(),
                public_key: vec![0; 32],
                signature: vec![0; 64],
            })
            .await
        }
    })
    .await;
    let wait = retry_hint(&refusal, "logins_per_second_per_address");
    // Another address is not limited: 127.0.0.2 logs in at once.
    let other = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        relay.server.as_ref().expect("running").grpc_addr
    ))
    .expect("uri")
    .local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
    .connect()
    .await
    .expect("connect from 127.0.0.2");
    login(&other, "bob", IdentityKey::generate()).await;
    // Also long enough for the challenge limit (5 a second) to let one through again.
    tokio::time::sleep(wait.max(Duration::from_millis(400))).await;
    let key = IdentityKey::generate();
    let c = get_challenge_for(&ch, "alice", &key).await;
    let signature = key.sign(LOGIN_DOMAIN, &login_message(&c.challenge, "alice"));
    auth.login(LoginRequest {
        challenge_id: c.challenge_id,
        party_id: "alice".into(),
        public_key: key.public().to_vec(),
        signature: signature.to_vec(),
    })
    .await
    .expect("Login after the hint");

    let metrics = relay
        .server
        .as_ref()
        .expect("running")
        .relay
        .render_metrics();
    assert!(
        metrics.contains("method=\"/cohort.v1.Auth/GetChallenge\",code=\"ResourceExhausted\""),
        "refusals are counted:\n{metrics}"
    );
}

async fn get_challenge_for(
    channel: &tonic::transport::Channel,
    id: &str,
    key: &IdentityKey,
) -> cohort_wire::cohort::GetChallengeResponse {
    AuthClient::new(channel.clone())
        .get_challenge(GetChallengeRequest {
            party_id: id.into(),
            public_key: key.public().to_vec(),
        })
        .await
        .expect("GetChallenge")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_address_are_limited_before_anything_else() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        no_rate_limits(c);
        c.limits.calls_per_second_per_address = 5;
    })
    .await;
    let ch = relay.channel.clone();
    let (refusal, _) = burst_until_refused("any call", || get_challenge(&ch, "alice")).await;
    let wait = retry_hint(&refusal, "calls_per_second_per_address");
    tokio::time::sleep(wait).await;
    get_challenge(&ch, "alice")
        .await
        .expect("served after the hint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_identity_trip_with_a_hint_and_spare_other_parties() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        no_rate_limits(c);
        c.limits.routes_per_second_per_identity = 5;
        c.limits.sessions_per_second_per_identity = 5;
        c.limits.streams_per_second_per_identity = 5;
        c.limits.calls_per_second_per_identity = 25;
    })
    .await;
    let coord = relay.coordinator().await;
    let a = relay.registered("alice", "persistent").await;
    let b = relay.registered("bob", "persistent").await;
    let c = relay.registered("carol", "persistent").await;
    let d = relay.registered("dave", "persistent").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;

    // RouteMessage, per party: alice is refused, bob is not.
    let sid = s.session_id.clone();
    let (refusal, _) = burst_until_refused("RouteMessage", || {
        let mut r = a.router();
        let req = cohort_wire::router::RouteMessageRequest {
            session_id: sid.clone(),
            from_party: "alice".into(),
            to_parties: vec!["bob".into()],
            round_number: 1,
            message_type: "m".into(),
            payload: b"x".to_vec(),
        };
        async move { r.route_message(req).await }
    })
    .await;
    let wait = retry_hint(&refusal, "routes_per_second_per_identity");
    route(&b, &s.session_id, &["alice"], 1, b"bob is not limited").await;
    tokio::time::sleep(wait).await;
    route(&a, &s.session_id, &["bob"], 1, b"after the hint").await;

    // CreateSession, per party.
    let (refusal, _) = burst_until_refused("CreateSession", || {
        let mut sessions = coord.sessions();
        let req = cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 2,
            threshold_t: 2,
            parties: vec!["alice".into(), "bob".into()],
            ..Default::default()
        };
        async move { sessions.create_session(req).await }
    })
    .await;
    let wait = retry_hint(&refusal, "sessions_per_second_per_identity");
    tokio::time::sleep(wait).await;
    create_session(&coord, &[&a, &b]).await;

    // Opening streams, per party.
    let mut streams = Vec::new();
    let (refusal, _) = burst_until_refused("SubscribeSessionEvents", || {
        let mut r = d.router();
        let req = SubscribeSessionEventsRequest {
            party_id: "dave".into(),
            event_types: vec![],
        };
        async move { r.subscribe_session_events(req).await }
    })
    .await;
    let wait = retry_hint(&refusal, "streams_per_second_per_identity");
    tokio::time::sleep(wait).await;
    streams.push(subscribe_events(&d, &[]).await);

    // Every call of one party (Heartbeat here), per party.
    let (refusal, _) = burst_until_refused("Heartbeat", || {
        let mut r = c.router();
        async move {
            r.heartbeat(HeartbeatRequest {
                party_id: "carol".into(),
                ..Default::default()
            })
            .await
        }
    })
    .await;
    let wait = retry_hint(&refusal, "calls_per_second_per_identity");
    tokio::time::sleep(wait).await;
    c.router()
        .heartbeat(HeartbeatRequest {
            party_id: "carol".into(),
            ..Default::default()
        })
        .await
        .expect("Heartbeat after the hint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_flood_keeps_the_challenge_table_under_its_cap() {
    const CAP: u64 = 50;
    let mut relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        no_rate_limits(c);
        c.limits.max_challenges = CAP;
    })
    .await;
    let ch = relay.channel.clone();
    let first_key = IdentityKey::generate();
    let first = get_challenge_for(&ch, "alice", &first_key).await;
    let mut flood = Vec::new();
    for _ in 0..16 {
        let ch = ch.clone();
        flood.push(tokio::spawn(async move {
            for _ in 0..40 {
                get_challenge(&ch, "mallory").await.expect("GetChallenge");
            }
        }));
    }
    for t in flood {
        t.await.expect("flood task");
    }
    // The oldest challenges were evicted: the first can no longer be answered.
    let signature = first_key.sign(LOGIN_DOMAIN, &login_message(&first.challenge, "alice"));
    let evicted = AuthClient::new(ch.clone())
        .login(LoginRequest {
            challenge_id: first.challenge_id,
            party_id: "alice".into(),
            public_key: first_key.public().to_vec(),
            signature: signature.to_vec(),
        })
        .await;
    assert_refused(evicted, Code::Unauthenticated, "unknown or already used");
    // A fresh one still works.
    login(&ch, "alice", IdentityKey::generate()).await;

    let path = relay.dir.path().join("cohort.sqlite");
    relay.shutdown().await;
    let store = cohort_store::SqliteStore::open(&path, cohort_store::StoreOptions::default())
        .expect("reopen the database");
    let (stored, counted) = store
        .read(|v| {
            let rows = v.scan(Table::Challenges, &[], &[], usize::MAX)?.len();
            Ok((rows as u64, cohort_core::challenges::count(v)?))
        })
        .await
        .expect("count challenges");
    assert!(
        stored <= CAP,
        "{stored} challenges stored after 641; the cap is {CAP}"
    );
    assert_eq!(stored, counted, "the count matches the table");
    store.close().await.expect("close");
}
