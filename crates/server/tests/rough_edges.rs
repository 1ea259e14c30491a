//! Edges a new user hits with standard clients: reflection in both versions, one status for
//! every oversize request, idempotent re-join with one's own token.

mod common;

use common::*;

use cohort_wire::router::{JoinSessionRequest, RouteMessageRequest};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_the_services_like_v1() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let relay = Relay::start().await;
    let mut reflection = ServerReflectionClient::new(relay.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha ServerReflectionInfo is served")
        .into_inner();
    let answer = next(&mut answers).await;
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "mpc.router.v1.MessageRouter",
        "cohort.v1.Auth",
        "cohort.v1.Sessions",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_of_every_size_get_resource_exhausted_naming_the_limit() {
    const MAX_PAYLOAD: usize = 4096;
    let relay = Relay::start_with(|c| c.limits.max_payload_bytes = MAX_PAYLOAD).await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    // Just over the payload limit (the relay's check), past the transport's message limit
    // (payload limit + 64 KiB), and far past it.
    for size in [MAX_PAYLOAD + 1, MAX_PAYLOAD + 70_000, 5 * 1024 * 1024] {
        let refused = a
            .router()
            .route_message(RouteMessageRequest {
                session_id: s.session_id.clone(),
                from_party: "alice".into(),
                to_parties: vec!["bob".into()],
                round_number: 1,
                message_type: "big".into(),
                payload: vec![7; size],
            })
            .await
            .expect_err("an oversize request is refused");
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{size} bytes: {refused:?}"
        );
        let m = refused.message();
        assert!(
            m.contains("limit") || m.contains("larger than"),
            "{size} bytes: the refusal names the limit: {m}"
        );
    }
    // The relay keeps serving.
    route(&a, &s.session_id, &["bob"], 1, b"small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_with_ones_own_token_is_idempotent_and_nobody_else_may_use_it() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let join = |p: &Party, as_party: &str| {
        let req = JoinSessionRequest {
            session_id: s.session_id.clone(),
            party_id: as_party.into(),
            join_token: s.join_tokens["alice"].clone(),
            device_info: None,
        };
        let mut router = p.router();
        async move { router.join_session(req).await }
    };
    let first = join(&a, "alice").await.expect("first join").into_inner();
    let again = join(&a, "alice")
        .await
        .expect("a retried join with one's own token succeeds")
        .into_inner();
    assert_eq!(first.party_index, again.party_index);
    let joined = get_session(&a, &s.session_id)
        .await
        .participants
        .iter()
        .filter(|p| p.joined)
        .count();
    assert_eq!(joined, 1, "the retry joined nobody else");
    // bob cannot use alice's token, neither as himself nor as alice.
    let as_bob = join(&b, "bob").await.expect_err("another party's token");
    assert_eq!(as_bob.code(), Code::PermissionDenied);
    let as_alice = join(&b, "alice").await.expect_err("posing as alice");
    assert_eq!(as_alice.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_ready_in_one_call_answers_the_session_and_starts_it_when_all_are_ready() {
    use cohort_wire::cohort::JoinRequest;
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    let join = |p: &Party, ready: bool| {
        let req = JoinRequest {
            session_id: s.session_id.clone(),
            party_id: p.id.clone(),
            join_token: s.join_tokens[&p.id].clone(),
            ready,
        };
        let mut sessions = p.sessions();
        async move { sessions.join(req).await }
    };
    let first = join(&a, true)
        .await
        .expect("alice joins ready")
        .into_inner();
    assert!(!first.all_ready);
    let summary = first.session.expect("the session comes with the answer");
    assert_eq!(summary.status, "created");
    assert!(summary
        .participants
        .iter()
        .any(|p| p.party_id == "alice" && p.joined && p.ready));
    assert!(first.party_index >= 1);
    let second = join(&b, true).await.expect("bob joins ready").into_inner();
    assert!(second.all_ready);
    assert_eq!(second.session.expect("session").status, "in_progress");
    // Someone else's token is refused, and nothing changes.
    let wrong = JoinRequest {
        session_id: s.session_id.clone(),
        party_id: "bob".into(),
        join_token: s.join_tokens["alice"].clone(),
        ready: true,
    };
    let refused = b.sessions().join(wrong).await.expect_err("alice's token");
    assert_eq!(refused.code(), Code::PermissionDenied);
}
