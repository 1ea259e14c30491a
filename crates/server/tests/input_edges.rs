//! Malformed or unusual input from the issue "Hardening the relay", each answered as the API
//! promises: huge ids are not echoed back whole, a unary call carries one message, the content
//! type must be gRPC's, a negative expiry is invalid, and GetPendingMessages pages through any
//! number of waiting messages.

mod common;

use std::collections::HashSet;

use cohort_wire::cohort::GetChallengeRequest;
use cohort_wire::router::{
    GetPendingMessagesRequest, GetSessionStatusRequest, RouteMessageRequest,
};
use common::*;
use http_body_util::BodyExt;
use prost::Message;
use tonic::codegen::{http, Service};
use tonic::{Code, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_session_id_is_refused_without_being_echoed_whole() {
    let relay = Relay::start().await;
    let a = relay.party("alice").await;
    let refused = a
        .router()
        .get_session_status(GetSessionStatusRequest {
            session_id: "x".repeat(1024 * 1024),
        })
        .await
        .expect_err("not a session id");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let m = refused.message();
    assert!(m.len() < 1024, "{} bytes of message", m.len());
    assert!(
        m.contains("session_id") && m.contains("1048576 bytes"),
        "{m}"
    );
}

/// A raw gRPC request: `frames` as the body, `content_type` as given.
async fn raw_call(
    relay: &Relay,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (http::StatusCode, Option<Status>) {
    let mut channel = relay.channel.clone();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("channel ready");
    let addr = relay.server.as_ref().expect("running").grpc_addr;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            prost::bytes::Bytes::from(body),
        )))
        .expect("request");
    let resp = channel.call(req).await.expect("an HTTP answer");
    let code = resp.status();
    if let Some(status) = Status::from_header_map(resp.headers()) {
        return (code, Some(status));
    }
    let trailers = resp
        .into_body()
        .collect()
        .await
        .ok()
        .and_then(|b| b.trailers().cloned());
    (code, trailers.and_then(|t| Status::from_header_map(&t)))
}

/// One message in gRPC's length-prefixed framing.
fn framed(m: &impl Message) -> Vec<u8> {
    let payload = m.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_carrying_two_request_messages_is_refused() {
    let relay = Relay::start().await;
    let req = GetChallengeRequest {
        party_id: "alice".into(),
        public_key: vec![1; 32],
    };
    let one = framed(&req);
    let (_, status) = raw_call(
        &relay,
        "/cohort.v1.Auth/GetChallenge",
        "application/grpc",
        one.clone(),
    )
    .await;
    assert_eq!(
        status.map(|s| s.code()),
        Some(Code::Ok),
        "one message is served"
    );

    let two = [one.clone(), one].concat();
    let (_, status) = raw_call(
        &relay,
        "/cohort.v1.Auth/GetChallenge",
        "application/grpc",
        two,
    )
    .await;
    let status = status.expect("a gRPC status");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("one request message"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_grpc_gets_415() {
    let relay = Relay::start().await;
    let body = framed(&GetChallengeRequest {
        party_id: "alice".into(),
        public_key: vec![1; 32],
    });
    let (code, status) = raw_call(&relay, "/cohort.v1.Auth/GetChallenge", "text/plain", body).await;
    assert_eq!(code, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status = status.expect("a gRPC status too");
    assert!(status.message().contains("text/plain"), "{status:?}");
    // The relay keeps serving gRPC.
    relay.party("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_expires_in_ms_is_invalid_not_the_default() {
    let relay = Relay::start().await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let refused = coord
        .sessions()
        .create_session(cohort_wire::cohort::CreateSessionRequest {
            session_type: "keygen".into(),
            threshold_n: 2,
            threshold_t: 2,
            parties: vec![a.id.clone(), b.id.clone()],
            expires_in_ms: -1,
            ..Default::default()
        })
        .await;
    assert_refused(refused, Code::InvalidArgument, "expires_in_ms");
    // 0 still means the default.
    create_session_with(&coord, &[&a, &b], |r| r.expires_in_ms = 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pending_messages_pages_through_all_1500_waiting_messages() {
    const N: usize = 1500;
    let relay = Relay::start_with(|c| {
        c.limits.routes_per_second_per_identity = 0;
        c.limits.calls_per_second_per_identity = 0;
        c.limits.calls_per_second_per_address = 0;
    })
    .await;
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let b = relay.party("bob").await;
    let s = create_session(&coord, &[&a, &b]).await;
    join_all_ready(&[&a, &b], &s).await;
    // Sent 25 at a time, so many share a millisecond.
    let mut senders = Vec::new();
    for t in 0..25 {
        let mut r = a.router();
        let sid = s.session_id.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..N / 25 {
                r.route_message(RouteMessageRequest {
                    session_id: sid.clone(),
                    from_party: "alice".into(),
                    to_parties: vec!["bob".into()],
                    round_number: 1,
                    message_type: "m".into(),
                    payload: format!("{t}/{i}").into_bytes(),
                })
                .await
                .expect("RouteMessage");
            }
        }));
    }
    for t in senders {
        t.await.expect("sender");
    }

    let mut seen = HashSet::new();
    let mut received = 0;
    let mut pages = 0;
    let mut after = 0;
    loop {
        let page = b
            .router()
            .get_pending_messages(GetPendingMessagesRequest {
                session_id: s.session_id.clone(),
                party_id: "bob".into(),
                after_timestamp: after,
            })
            .await
            .expect("GetPendingMessages")
            .into_inner()
            .messages;
        let Some(last) = page.last() else { break };
        after = last.created_at;
        pages += 1;
        received += page.len();
        seen.extend(page.into_iter().map(|m| m.message_id));
        assert!(pages <= 10, "paging does not end");
    }
    assert!(pages >= 2, "1,500 messages do not fit one page of 1,000");
    assert_eq!(seen.len(), N, "every waiting message, across pages");
    assert_eq!(received, N, "none twice");
}
