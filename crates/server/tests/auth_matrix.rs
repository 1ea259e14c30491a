//! Who may do what, over real gRPC: every refusal with its exact gRPC code, and bad input
//! refused with INVALID_ARGUMENT naming the field. After all of it the relay still serves and
//! nothing refused was half-written.

mod common;

use common::*;

use cohort_crypto::identity::{login_message, IdentityKey, LOGIN_DOMAIN};
use cohort_wire::cohort::admin_client::AdminClient;
use cohort_wire::cohort::auth_client::AuthClient;
use cohort_wire::cohort::sessions_client::SessionsClient;
use cohort_wire::cohort::{
    CreateSessionRequest, GetChallengeRequest, GetDelegateSharesRequest, GetEncryptionKeysRequest,
    GetSessionRequest, ListSessionsRequest, LoginRequest, PublishEncryptionKeyRequest,
    ReportFailureRequest, ServerInfoRequest,
};
use cohort_wire::router::message_router_client::MessageRouterClient;
use cohort_wire::router::{
    AcknowledgeMessageRequest, GetMessageStatusRequest, GetPendingMessagesRequest,
    GetRegisteredPartiesRequest, GetSessionStatusRequest, HeartbeatRequest, JoinSessionRequest,
    MarkPartyReadyRequest, PublishSessionEventRequest, RegisterPartyRequest,
    ReportCompletionRequest, RouteMessageRequest, SessionEvent, SubmitDelegateShareRequest,
    SubscribeMessagesRequest, SubscribeSessionEventsRequest,
};
use tonic::Code;

const UNKNOWN_SESSION: &str = "0190f5a2-7c1e-7000-8000-000000000000";

fn route_req(session_id: &str, from: &str, to: &[&str], payload: Vec<u8>) -> RouteMessageRequest {
    RouteMessageRequest {
        session_id: session_id.into(),
        from_party: from.into(),
        to_parties: to.iter().map(|s| s.to_string()).collect(),
        round_number: 1,
        message_type: "round1".into(),
        payload,
    }
}

fn subscribe_req(session_id: &str, party: &str) -> SubscribeMessagesRequest {
    SubscribeMessagesRequest {
        session_id: session_id.into(),
        party_id: party.into(),
    }
}

fn ack_req(message_id: &str, party: &str, session_id: &str) -> AcknowledgeMessageRequest {
    AcknowledgeMessageRequest {
        message_id: message_id.into(),
        party_id: party.into(),
        session_id: session_id.into(),
        success: true,
        error_message: String::new(),
    }
}

fn create_req(parties: &[&str], n: i32, t: i32) -> CreateSessionRequest {
    CreateSessionRequest {
        session_type: "keygen".into(),
        threshold_n: n,
        threshold_t: t,
        parties: parties.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn event(session_id: &str, to: &[&str]) -> PublishSessionEventRequest {
    PublishSessionEventRequest {
        event: Some(SessionEvent {
            event_type: "round_hint".into(),
            session_id: session_id.into(),
            selected_parties: to.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    }
}

/// The pending count bob's heartbeat reports: what was really stored for him.
async fn backlog(p: &Party) -> i32 {
    p.router()
        .heartbeat(HeartbeatRequest {
            party_id: p.id.clone(),
            timestamp: 0,
        })
        .await
        .expect("Heartbeat")
        .into_inner()
        .pending_messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_tokens_are_unauthenticated() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let sid = s.session_id.as_str();

    // No authorization metadata at all.
    let mut router = MessageRouterClient::new(relay.channel.clone());
    assert_refused(
        router
            .route_message(route_req(sid, "alice", &[], b"x".to_vec()))
            .await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_refused(
        router.subscribe_messages(subscribe_req(sid, "alice")).await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_refused(
        router
            .get_session_status(GetSessionStatusRequest {
                session_id: sid.into(),
            })
            .await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_refused(
        SessionsClient::new(relay.channel.clone())
            .create_session(create_req(&["alice", "bob"], 2, 2))
            .await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_refused(
        AdminClient::new(relay.channel.clone())
            .server_info(ServerInfoRequest {})
            .await,
        Code::Unauthenticated,
        "authorization",
    );

    // Malformed values and tokens this server never issued.
    for (value, needle) in [
        ("Basic YWxpY2U6cw==".to_string(), "Bearer"),
        (a.token.clone(), "Bearer"),
        ("Bearer not-a-token".to_string(), "malformed"),
        (format!("Bearer {}", &a.token[..62]), "malformed"),
        (
            format!("Bearer {}", "ab".repeat(32)),
            "unknown access token",
        ),
    ] {
        let bearer = Bearer::raw(&value);
        assert_refused(
            router_with(&relay.channel, bearer.clone())
                .route_message(route_req(sid, "alice", &[], b"x".to_vec()))
                .await,
            Code::Unauthenticated,
            needle,
        );
        assert_refused(
            sessions_with(&relay.channel, bearer.clone())
                .get_session(GetSessionRequest {
                    session_id: sid.into(),
                })
                .await,
            Code::Unauthenticated,
            needle,
        );
        assert_refused(
            keys_with(&relay.channel, bearer)
                .get_encryption_keys(GetEncryptionKeysRequest {
                    party_ids: vec!["alice".into()],
                })
                .await,
            Code::Unauthenticated,
            needle,
        );
    }
    assert_eq!(backlog(&b).await, 0, "nothing refused was stored");
    // The real token still works.
    route(&a, sid, &[], 1, b"ok").await;
    assert_eq!(backlog(&b).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_unauthenticated() {
    // No sweep during the test: it would delete the expired token ("unknown" instead of "expired").
    let relay = Relay::start_with(|c| {
        c.limits.token_ttl_ms = 1;
        c.sweep_interval_ms = 3_600_000;
    })
    .await;
    // Every token expires at once, the coordinator's too, so no enrollment: the key logs in
    // under its own key-derived id.
    let key = IdentityKey::generate();
    let id = cohort_crypto::identity::key_party_id(&key.public());
    let a = login(&relay.channel, &id, key).await;
    // Wait until the clock has passed the token's expiry (a bound, not a timing assertion).
    eventually("the token to expire", || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (now > a.token_expires_at + 1).then_some(())
    })
    .await;
    assert_refused(
        a.admin().server_info(ServerInfoRequest {}).await,
        Code::Unauthenticated,
        "expired",
    );
    assert_refused(
        a.router()
            .heartbeat(HeartbeatRequest {
                party_id: a.id.clone(),
                timestamp: 0,
            })
            .await,
        Code::Unauthenticated,
        "expired",
    );
    // Logging in again gives a fresh token (that also expires at once, with this config).
    let again = login(&relay.channel, &id, a.key).await;
    assert!(again.token_expires_at >= a.token_expires_at);
    assert_ne!(again.token, a.token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_bad_signatures_reused_challenges_and_stolen_ids() {
    let relay = Relay::start().await;
    let mut auth = AuthClient::new(relay.channel.clone());
    let key = IdentityKey::generate();
    let challenge = |party: &str, public: Vec<u8>| GetChallengeRequest {
        party_id: party.into(),
        public_key: public,
    };

    let c = auth
        .get_challenge(challenge("alice", key.public().to_vec()))
        .await
        .expect("GetChallenge")
        .into_inner();
    assert_eq!(c.challenge_id.len(), 64);
    assert!(!c.challenge.is_empty());
    assert!(c.expires_at > 0);
    // Signed for another party id: refused, and the challenge is consumed.
    let wrong = key.sign(LOGIN_DOMAIN, &login_message(&c.challenge, "mallory"));
    let login_req = |sig: [u8; 64]| LoginRequest {
        challenge_id: c.challenge_id.clone(),
        party_id: "alice".into(),
        public_key: key.public().to_vec(),
        signature: sig.to_vec(),
    };
    assert_refused(
        auth.login(login_req(wrong)).await,
        Code::Unauthenticated,
        "signature",
    );
    let right = key.sign(LOGIN_DOMAIN, &login_message(&c.challenge, "alice"));
    assert_refused(
        auth.login(login_req(right)).await,
        Code::Unauthenticated,
        "challenge",
    );

    // Once "alice" is enrolled to this key it logs in; another key cannot take the id.
    relay.enroll("alice", &key).await;
    let alice = login(&relay.channel, "alice", key).await;
    assert!(!alice.coordinator);
    assert_refused(
        auth.get_challenge(challenge(
            "alice",
            IdentityKey::generate().public().to_vec(),
        ))
        .await,
        Code::PermissionDenied,
        "another identity key",
    );

    // Bad input to Auth names its field.
    assert_refused(
        auth.get_challenge(challenge("a:b", vec![0; 32])).await,
        Code::InvalidArgument,
        "party_id",
    );
    assert_refused(
        auth.get_challenge(challenge("zoe", vec![0; 31])).await,
        Code::InvalidArgument,
        "public_key",
    );
    assert_refused(
        auth.login(LoginRequest {
            challenge_id: "short".into(),
            party_id: "zoe".into(),
            public_key: vec![0; 32],
            signature: vec![0; 64],
        })
        .await,
        Code::InvalidArgument,
        "challenge_id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_as_another_party_is_permission_denied() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let sid = s.session_id.as_str();
    join_all_ready(&[&a, &b], &s).await;
    let to_bob = route(&a, sid, &["bob"], 1, b"for bob").await;
    let mut r = a.router(); // alice's token throughout

    assert_refused(
        r.route_message(route_req(sid, "bob", &["alice"], b"forged".to_vec()))
            .await,
        Code::PermissionDenied,
        "from_party",
    );
    assert_refused(
        r.subscribe_messages(subscribe_req(sid, "bob")).await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.get_pending_messages(GetPendingMessagesRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            after_timestamp: 0,
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.acknowledge_message(ack_req(&to_bob, "bob", sid)).await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.acknowledge_message(ack_req(&to_bob, "alice", sid)).await,
        Code::PermissionDenied,
        "not sent to",
    );
    assert_refused(
        r.join_session(JoinSessionRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            join_token: s.join_tokens["bob"].clone(),
            device_info: None,
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.mark_party_ready(MarkPartyReadyRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.report_completion(ReportCompletionRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            public_key: vec![1; 32],
            signature: Vec::new(),
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.register_party(RegisterPartyRequest {
            party_id: "bob".into(),
            party_role: "persistent".into(),
            version: String::new(),
            notification: None,
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.heartbeat(HeartbeatRequest {
            party_id: "bob".into(),
            timestamp: 0,
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.subscribe_session_events(SubscribeSessionEventsRequest {
            party_id: "bob".into(),
            event_types: vec![],
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        r.submit_delegate_share(SubmitDelegateShareRequest {
            session_id: sid.into(),
            party_id: "bob".into(),
            encrypted_share: b"x".to_vec(),
            public_key: Vec::new(),
            party_index: 0,
        })
        .await,
        Code::PermissionDenied,
        "party_id",
    );
    assert_refused(
        a.sessions()
            .report_failure(ReportFailureRequest {
                session_id: sid.into(),
                party_id: "bob".into(),
                reason: "framed".into(),
                culprit: "alice".into(),
            })
            .await,
        Code::PermissionDenied,
        "party_id",
    );

    // Nothing of it took effect: bob's mailbox holds only alice's real message, unacked,
    // and the session is still running with no completion report.
    assert_eq!(backlog(&b).await, 1);
    let status = a
        .router()
        .get_message_status(GetMessageStatusRequest {
            message_id: to_bob.clone(),
            session_id: sid.into(),
        })
        .await
        .expect("GetMessageStatus")
        .into_inner();
    assert_eq!(status.deliveries[0].status, "pending");
    let summary = coord
        .sessions()
        .get_session(GetSessionRequest {
            session_id: sid.into(),
        })
        .await
        .expect("GetSession")
        .into_inner();
    assert_eq!(summary.status, "in_progress");
    assert!(summary.participants.iter().all(|p| !p.completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_wrong_tokens_and_non_coordinators_are_permission_denied() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let d = relay.party("dave").await; // in no session
    let s = create_session(&coord, &[&a, &b]).await;
    let sid = s.session_id.as_str();
    let to_bob = route(&a, sid, &["bob"], 1, b"for bob").await;
    let mut dr = d.router();

    // Non-member sending, subscribing, polling, reading, joining, acking.
    assert_refused(
        dr.route_message(route_req(sid, "dave", &["bob"], b"intrude".to_vec()))
            .await,
        Code::PermissionDenied,
        "not a participant",
    );
    assert_refused(
        dr.subscribe_messages(subscribe_req(sid, "dave")).await,
        Code::PermissionDenied,
        "not a participant",
    );
    assert_refused(
        dr.get_pending_messages(GetPendingMessagesRequest {
            session_id: sid.into(),
            party_id: "dave".into(),
            after_timestamp: 0,
        })
        .await,
        Code::PermissionDenied,
        "not a participant",
    );
    assert_refused(
        dr.get_session_status(GetSessionStatusRequest {
            session_id: sid.into(),
        })
        .await,
        Code::PermissionDenied,
        "dave",
    );
    assert_refused(
        dr.join_session(JoinSessionRequest {
            session_id: sid.into(),
            party_id: "dave".into(),
            join_token: s.join_tokens["bob"].clone(),
            device_info: None,
        })
        .await,
        Code::PermissionDenied,
        "not a participant",
    );
    assert_refused(
        dr.acknowledge_message(ack_req(&to_bob, "dave", sid)).await,
        Code::PermissionDenied,
        "not sent to",
    );
    assert_refused(
        dr.get_message_status(GetMessageStatusRequest {
            message_id: to_bob.clone(),
            session_id: sid.into(),
        })
        .await,
        Code::PermissionDenied,
        "sender",
    );
    assert_refused(
        d.sessions()
            .report_failure(ReportFailureRequest {
                session_id: sid.into(),
                party_id: "dave".into(),
                reason: "sabotage".into(),
                culprit: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "not a participant",
    );
    // A member may not address a non-member.
    assert_refused(
        a.router()
            .route_message(route_req(sid, "alice", &["dave"], b"leak".to_vec()))
            .await,
        Code::PermissionDenied,
        "to_parties[0]",
    );
    // A recipient other than the sender may not read a message's delivery status.
    assert_refused(
        b.router()
            .get_message_status(GetMessageStatusRequest {
                message_id: to_bob.clone(),
                session_id: sid.into(),
            })
            .await,
        Code::PermissionDenied,
        "sender",
    );

    // Wrong join tokens: another party's, and a made-up one.
    for token in [s.join_tokens["alice"].clone(), "00".repeat(16)] {
        assert_refused(
            b.router()
                .join_session(JoinSessionRequest {
                    session_id: sid.into(),
                    party_id: "bob".into(),
                    join_token: token,
                    device_info: None,
                })
                .await,
            Code::PermissionDenied,
            "join_token",
        );
    }

    // Coordinator-only operations.
    assert_refused(
        a.sessions()
            .create_session(create_req(&["alice", "bob"], 2, 2))
            .await,
        Code::PermissionDenied,
        "coordinator",
    );
    assert_refused(
        a.router().publish_session_event(event(sid, &["bob"])).await,
        Code::PermissionDenied,
        "coordinator",
    );
    // ListSessions is not coordinator-only: a party sees the sessions it is in, and only those.
    let listed = |p: &Party| {
        let mut sessions = p.sessions();
        async move {
            sessions
                .list_sessions(ListSessionsRequest::default())
                .await
                .expect("ListSessions")
                .into_inner()
                .sessions
                .into_iter()
                .map(|s| s.session_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&a).await, vec![sid.to_string()]);
    assert!(listed(&d).await.is_empty(), "dave is in no session");
    assert_refused(
        a.sessions()
            .get_delegate_shares(GetDelegateSharesRequest {
                session_id: sid.into(),
            })
            .await,
        Code::PermissionDenied,
        "creator",
    );

    // None of it touched the session: nobody joined, bob holds one message.
    let summary = coord
        .sessions()
        .get_session(GetSessionRequest {
            session_id: sid.into(),
        })
        .await
        .expect("GetSession")
        .into_inner();
    assert_eq!(summary.status, "created");
    assert!(summary.participants.iter().all(|p| !p.joined));
    assert_eq!(backlog(&b).await, 1);
    let listed = coord
        .sessions()
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect("ListSessions")
        .into_inner();
    assert_eq!(
        listed.sessions.len(),
        1,
        "alice's CreateSession made nothing"
    );
    // The right token still joins.
    join(&b, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_not_found() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let mut r = a.router();

    assert_refused(
        r.get_session_status(GetSessionStatusRequest {
            session_id: UNKNOWN_SESSION.into(),
        })
        .await,
        Code::NotFound,
        UNKNOWN_SESSION,
    );
    assert_refused(
        r.route_message(route_req(UNKNOWN_SESSION, "alice", &[], b"x".to_vec()))
            .await,
        Code::NotFound,
        UNKNOWN_SESSION,
    );
    assert_refused(
        r.subscribe_messages(subscribe_req(UNKNOWN_SESSION, "alice"))
            .await,
        Code::NotFound,
        UNKNOWN_SESSION,
    );
    assert_refused(
        r.join_session(JoinSessionRequest {
            session_id: UNKNOWN_SESSION.into(),
            party_id: "alice".into(),
            join_token: "00".repeat(16),
            device_info: None,
        })
        .await,
        Code::NotFound,
        UNKNOWN_SESSION,
    );
    assert_refused(
        coord
            .sessions()
            .get_session(GetSessionRequest {
                session_id: UNKNOWN_SESSION.into(),
            })
            .await,
        Code::NotFound,
        UNKNOWN_SESSION,
    );
    // An unknown message, and a known message asked for in the wrong session.
    assert_refused(
        r.get_message_status(GetMessageStatusRequest {
            message_id: UNKNOWN_SESSION.into(),
            session_id: String::new(),
        })
        .await,
        Code::NotFound,
        "message",
    );
    let id = route(&a, &s.session_id, &[], 1, b"x").await;
    assert_refused(
        b.router()
            .acknowledge_message(ack_req(&id, "bob", UNKNOWN_SESSION))
            .await,
        Code::NotFound,
        "not in session",
    );
    // Unknown parties.
    assert_refused(
        coord
            .sessions()
            .create_session(create_req(&["alice", "nobody"], 2, 2))
            .await,
        Code::NotFound,
        "nobody",
    );
    // GetEncryptionKeys is the exception: unknown parties are left out, like keyless ones.
    let keys = a
        .keys()
        .get_encryption_keys(GetEncryptionKeysRequest {
            party_ids: vec!["nobody".into()],
        })
        .await
        .expect("GetEncryptionKeys of an unknown party")
        .into_inner();
    assert!(keys.keys.is_empty());
    assert_refused(
        coord
            .router()
            .publish_session_event(event(&s.session_id, &["alice", "nobody"]))
            .await,
        Code::NotFound,
        "nobody",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field_and_the_relay_keeps_serving() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let sid = s.session_id.as_str();
    let mut r = a.router();
    let mut cs = coord.sessions();

    // Session ids.
    for bad in ["", "not-a-uuid"] {
        assert_refused(
            r.get_session_status(GetSessionStatusRequest {
                session_id: bad.into(),
            })
            .await,
            Code::InvalidArgument,
            "session_id",
        );
        assert_refused(
            r.route_message(route_req(bad, "alice", &[], b"x".to_vec()))
                .await,
            Code::InvalidArgument,
            "session_id",
        );
        assert_refused(
            r.subscribe_messages(subscribe_req(bad, "alice")).await,
            Code::InvalidArgument,
            "session_id",
        );
    }
    // Payload over the limit (default 1 MiB), too many recipients, bad recipients.
    let max = cohort_server::Config::default().limits.max_payload_bytes;
    assert_refused(
        r.route_message(route_req(sid, "alice", &["bob"], vec![0u8; max + 1]))
            .await,
        Code::ResourceExhausted,
        "payload",
    );
    let crowd: Vec<String> = (0..1001).map(|i| format!("p{i}")).collect();
    let crowd: Vec<&str> = crowd.iter().map(String::as_str).collect();
    assert_refused(
        r.route_message(route_req(sid, "alice", &crowd, b"x".to_vec()))
            .await,
        Code::ResourceExhausted,
        "to_parties",
    );
    assert_refused(
        r.route_message(route_req(sid, "alice", &["bob", "bad id"], b"x".to_vec()))
            .await,
        Code::InvalidArgument,
        "to_parties[1]",
    );
    assert_refused(
        r.route_message(route_req(sid, "alice", &["alice"], b"x".to_vec()))
            .await,
        Code::InvalidArgument,
        "to_parties[0]",
    );
    assert_refused(
        r.route_message(route_req(sid, "alice", &["bob", "bob"], b"x".to_vec()))
            .await,
        Code::InvalidArgument,
        "to_parties",
    );
    assert_refused(
        r.route_message(route_req(sid, "", &["bob"], b"x".to_vec()))
            .await,
        Code::InvalidArgument,
        "from_party",
    );
    // message_type: 64 chars pass, 65 do not.
    let mut typed = route_req(sid, "alice", &["bob"], b"x".to_vec());
    typed.message_type = "t".repeat(65);
    assert_refused(
        r.route_message(typed.clone()).await,
        Code::InvalidArgument,
        "message_type",
    );
    typed.message_type = "t".repeat(64);
    r.route_message(typed.clone())
        .await
        .expect("a 64-char message_type is fine");
    typed.round_number = -1;
    assert_refused(
        r.route_message(typed).await,
        Code::InvalidArgument,
        "round_number",
    );

    // Thresholds, parties and labels at session creation.
    for (n, t) in [(2, 3), (2, 0), (0, 0), (1001, 1)] {
        assert_refused(
            cs.create_session(create_req(&["alice", "bob"], n, t)).await,
            Code::InvalidArgument,
            "threshold_t",
        );
    }
    assert_refused(
        cs.create_session(create_req(&["alice"], 2, 2)).await,
        Code::InvalidArgument,
        "parties",
    );
    assert_refused(
        cs.create_session(create_req(&["alice", "alice"], 2, 2))
            .await,
        Code::InvalidArgument,
        "twice",
    );
    let mut untyped = create_req(&["alice", "bob"], 2, 2);
    untyped.session_type = String::new();
    assert_refused(
        cs.create_session(untyped).await,
        Code::InvalidArgument,
        "session_type",
    );
    let mut no_parties = create_req(&[], 2, 2);
    no_parties.role_filter = String::new();
    assert_refused(
        cs.create_session(no_parties).await,
        Code::InvalidArgument,
        "role_filter",
    );
    let mut bad_role = create_req(&[], 2, 2);
    bad_role.role_filter = "boss".into();
    assert_refused(
        cs.create_session(bad_role).await,
        Code::InvalidArgument,
        "role_filter",
    );
    assert_refused(
        cs.list_sessions(ListSessionsRequest {
            status: "running".into(),
            limit: 0,
        })
        .await,
        Code::InvalidArgument,
        "status",
    );

    // Directory and acknowledgements.
    assert_refused(
        r.register_party(RegisterPartyRequest {
            party_id: "alice".into(),
            party_role: "boss".into(),
            version: "1".into(),
            notification: None,
        })
        .await,
        Code::InvalidArgument,
        "party_role",
    );
    assert_refused(
        r.register_party(RegisterPartyRequest {
            party_id: "alice".into(),
            party_role: "persistent".into(),
            version: "v".repeat(65),
            notification: None,
        })
        .await,
        Code::InvalidArgument,
        "version",
    );
    assert_refused(
        r.get_registered_parties(GetRegisteredPartiesRequest {
            role_filter: "boss".into(),
            only_online: false,
        })
        .await,
        Code::InvalidArgument,
        "role_filter",
    );
    assert_refused(
        b.router()
            .acknowledge_message(ack_req("not-an-id", "bob", sid))
            .await,
        Code::InvalidArgument,
        "message_id",
    );
    assert_refused(
        r.subscribe_session_events(SubscribeSessionEventsRequest {
            party_id: "alice".into(),
            event_types: vec!["x".repeat(65)],
        })
        .await,
        Code::InvalidArgument,
        "event_types[0]",
    );
    assert_refused(
        coord
            .router()
            .publish_session_event(PublishSessionEventRequest { event: None })
            .await,
        Code::InvalidArgument,
        "event",
    );
    assert_refused(
        coord.router().publish_session_event(event(sid, &[])).await,
        Code::InvalidArgument,
        "selected_parties",
    );
    assert_refused(
        a.keys()
            .publish_encryption_key(PublishEncryptionKeyRequest {
                encryption_key: vec![1; 31],
                signature: vec![0; 64],
            })
            .await,
        Code::InvalidArgument,
        "encryption_key",
    );
    assert_refused(
        r.report_completion(ReportCompletionRequest {
            session_id: sid.into(),
            party_id: "alice".into(),
            public_key: vec![0; 1025],
            signature: Vec::new(),
        })
        .await,
        Code::InvalidArgument,
        "public_key",
    );

    // Still serving, and only the accepted message was stored for bob.
    let info = coord
        .admin()
        .server_info(ServerInfoRequest {})
        .await
        .expect("ServerInfo after the bad input")
        .into_inner();
    assert_eq!(info.sessions_open, 1);
    assert_eq!(backlog(&b).await, 1);
    route(&a, sid, &["bob"], 1, b"still serving").await;
    assert_eq!(backlog(&b).await, 2);
}
