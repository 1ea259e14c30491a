//! The squatting attack, over real gRPC against a real relay: an unauthenticated client logs
//! in as `treasury-signer-1` with its own key before the real owner does. By default it is
//! refused at login; under open enrollment it takes the id but cannot join, send in or read a
//! session whose party keys name the real key. Plus the Directory service, and what the
//! relay's files hold and who may read them.

mod common;

use common::*;

use cohort_crypto::identity::{key_party_id, login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::{
    GetChallengeRequest, ListEnrolledRequest, LoginRequest, ServerInfoRequest, UnenrollRequest,
};
use cohort_wire::router::{AcknowledgeMessageRequest, JoinSessionRequest, RouteMessageRequest};
use sha2::{Digest, Sha256};
use tonic::Code;

const SIGNER: &str = "treasury-signer-1";

/// GetChallenge and Login of `party_id` with `key`, returning Login's answer as is.
async fn try_login(
    relay: &Relay,
    party_id: &str,
    key: &IdentityKey,
) -> Result<cohort_wire::cohort::LoginResponse, tonic::Status> {
    let mut auth = AuthClient::new(relay.channel.clone());
    let c = auth
        .get_challenge(GetChallengeRequest {
            party_id: party_id.into(),
            public_key: key.public().to_vec(),
        })
        .await?
        .into_inner();
    let signature = key.sign(LOGIN_DOMAIN, &login_message(&c.challenge, party_id));
    auth.login(LoginRequest {
        challenge_id: c.challenge_id,
        party_id: party_id.into(),
        public_key: key.public().to_vec(),
        signature: signature.to_vec(),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenrolled_key_cannot_log_in_as_a_signer_and_the_enrolled_owner_can() {
    let relay = Relay::start().await;
    let squatter = IdentityKey::generate();
    let owner = IdentityKey::generate();

    // The attacker comes first: refused, and told how enrollment works.
    assert_refused(
        try_login(&relay, SIGNER, &squatter).await,
        Code::PermissionDenied,
        "not enrolled",
    );
    // Its own key-derived id is all an unenrolled key gets.
    let own = key_party_id(&squatter.public());
    try_login(&relay, &own, &squatter)
        .await
        .expect("an unenrolled key logs in under its own id");

    relay.enroll(SIGNER, &owner).await;
    let me = login(&relay.channel, SIGNER, owner).await;
    assert!(!me.coordinator);
    // After enrollment the attacker is refused as early as GetChallenge.
    assert_refused(
        try_login(&relay, SIGNER, &squatter).await,
        Code::PermissionDenied,
        "another identity key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_open_enrollment_a_squatter_bound_first_cannot_join_a_session_naming_the_real_key() {
    let relay = Relay::start_with(|c| c.open_enrollment = true).await;
    let owner = IdentityKey::generate();
    let squatter = login(&relay.channel, SIGNER, IdentityKey::generate()).await;
    let coord = relay.coordinator().await;
    let peer = relay.party("peer").await;

    // The coordinator names the real owner's key, as a signed descriptor would.
    let s = create_session_with(&coord, &[&squatter, &peer], |r| {
        r.party_keys
            .insert(SIGNER.to_string(), owner.public().to_vec());
    })
    .await;
    let summary = get_session(&coord, &s.session_id).await;
    let named: Vec<(String, Vec<u8>)> = summary
        .participants
        .iter()
        .map(|p| (p.party_id.clone(), p.identity_key.clone()))
        .collect();
    assert_eq!(
        named,
        vec![
            (SIGNER.to_string(), owner.public().to_vec()),
            ("peer".to_string(), peer.key.public().to_vec()),
        ]
    );

    // The squatter holds the id, so the session_created event with the id's token reaches it.
    let mut events = subscribe_events(&squatter, &["session_created"]).await;
    let created = next_event(&mut events, "session_created", &s.session_id).await;
    let token = created.join_tokens[SIGNER].clone();
    assert_refused(
        squatter
            .router()
            .join_session(JoinSessionRequest {
                session_id: s.session_id.clone(),
                party_id: SIGNER.into(),
                join_token: token,
                device_info: None,
            })
            .await,
        Code::PermissionDenied,
        "another identity key",
    );
    // Nor can it speak as the signer: its message never reaches the peer.
    assert_refused(
        squatter
            .router()
            .route_message(RouteMessageRequest {
                session_id: s.session_id.clone(),
                from_party: SIGNER.into(),
                to_parties: vec!["peer".into()],
                round_number: 1,
                message_type: "round1".into(),
                payload: b"as the signer".to_vec(),
            })
            .await,
        Code::PermissionDenied,
        "another identity key",
    );
    join(&peer, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_enrolls_lists_and_unenrolls_for_coordinators_only() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let alice = relay.party("alice").await;

    assert_refused(
        alice
            .directory()
            .list_enrolled(ListEnrolledRequest { party_ids: vec![] })
            .await,
        Code::PermissionDenied,
        "coordinator",
    );
    assert_refused(
        alice
            .directory()
            .enroll(cohort_wire::cohort::EnrollRequest {
                party_id: "mallory".into(),
                identity_key: IdentityKey::generate().public().to_vec(),
                role: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "coordinator",
    );
    assert_refused(
        coord
            .directory()
            .enroll(cohort_wire::cohort::EnrollRequest {
                party_id: "alice".into(),
                identity_key: IdentityKey::generate().public().to_vec(),
                role: String::new(),
            })
            .await,
        Code::AlreadyExists,
        "unenroll it first",
    );

    let listed = coord
        .directory()
        .list_enrolled(ListEnrolledRequest { party_ids: vec![] })
        .await
        .expect("ListEnrolled")
        .into_inner()
        .enrollments;
    let rows: Vec<(&str, &str)> = listed
        .iter()
        .map(|e| (e.party_id.as_str(), e.source.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![("alice", "enrolled"), (COORDINATOR, "coordinator_key")]
    );
    assert_eq!(listed[0].identity_key, alice.key.public().to_vec());
    assert_eq!(listed[0].enrolled_by, COORDINATOR);

    // Unenrolling revokes alice's token at once (not at its expiry) and her login.
    let removed = coord
        .directory()
        .unenroll(UnenrollRequest {
            party_id: "alice".into(),
        })
        .await
        .expect("Unenroll")
        .into_inner();
    assert!(removed.removed);
    assert_refused(
        alice.admin().server_info(ServerInfoRequest {}).await,
        Code::Unauthenticated,
        "log in again",
    );
    assert_refused(
        try_login(&relay, "alice", &alice.key).await,
        Code::PermissionDenied,
        "not enrolled",
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_stored_hashed_and_the_database_files_are_private() {
    let mut relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    assert_eq!(s.join_tokens.len(), 2);

    // Each party takes its token from its own session_created event and settles the event,
    // which removes the only stored copy of that token.
    for p in [&a, &b] {
        let mut events = subscribe_events(p, &["session_created"]).await;
        let e = next_event(&mut events, "session_created", &s.session_id).await;
        assert_eq!(e.join_tokens.len(), 1, "{} sees only its own token", p.id);
        assert_eq!(e.join_tokens.get(&p.id), s.join_tokens.get(&p.id));
        p.router()
            .acknowledge_message(AcknowledgeMessageRequest {
                message_id: e.event_id.clone(),
                party_id: p.id.clone(),
                session_id: s.session_id.clone(),
                success: true,
                error_message: String::new(),
            })
            .await
            .expect("AcknowledgeMessage");
        join(p, &s).await;
    }

    let db = relay.dir.path().join("cohort.sqlite");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", db.display());
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{path} is {:o}", mode & 0o777);
        }
    }

    relay.shutdown().await;
    let stored = std::fs::read(&db).expect("read the database file");
    for (party, token) in &s.join_tokens {
        assert!(
            !contains(&stored, token.as_bytes()),
            "{party}'s join token is in the database file"
        );
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert!(contains(&stored, &hash), "{party}'s token hash is stored");
    }
}
