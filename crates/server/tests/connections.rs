//! Connection limits on real sockets: idle connections do not starve new clients, caps per
//! address and in total refuse (counted) and the relay keeps serving, silent connections are
//! closed after the handshake timeout and idle ones after the idle timeout, streams per
//! connection are capped, and shutdown finishes within its grace period whatever the peers do.
//!
//! Idle connections come from several loopback addresses (127.0.0.2, .3, ...: Linux routes all
//! of 127/8 to the loopback interface), so the per-address cap can be shown apart from the
//! total. Times in assertions are safety bounds, many times what the relay needs.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cohort_wire::router::HeartbeatRequest;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect(to)
        .await
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"))
}

/// Whether the relay closes `stream` within `within`: reads (and drops) whatever the relay
/// sends until end of stream or a reset.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Plays a well-behaved but silent HTTP/2 client on `stream` (acknowledges SETTINGS and
/// PINGs, opens nothing) until the relay closes it; returns the types of the frames it sent.
async fn silent_client_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut kinds = Vec::new();
    let talk = async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let len = (usize::from(header[0]) << 16)
                | (usize::from(header[1]) << 8)
                | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            let (kind, ack) = (header[3], header[4] & 0x1 != 0);
            kinds.push(kind);
            let answer = match (kind, ack) {
                (0x4, false) => [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0].to_vec(),
                (0x6, false) => {
                    let mut pong = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    pong
                }
                _ => continue,
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    };
    let closed = tokio::time::timeout(within, talk).await;
    assert!(
        closed.is_ok(),
        "the relay did not close the connection; it sent {kinds:?}"
    );
    kinds
}

/// A party can log in and send a heartbeat over a fresh connection.
async fn serves_a_new_client(addr: SocketAddr, id: &str) {
    let channel = connect(addr).await;
    let p = login(
        &channel,
        id,
        cohort_crypto::identity::IdentityKey::generate(),
    )
    .await;
    register(&p, "persistent").await;
    p.router()
        .heartbeat(HeartbeatRequest {
            party_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .expect("Heartbeat over the new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_a_new_client() {
    // 2,000 client sockets here and 2,000 accepted ones in the relay, in this one process.
    let limit = rlimit::increase_nofile_limit(8192).expect("read the descriptor limit");
    assert!(
        limit >= 5000,
        "the test needs about 4,100 descriptors; ulimit -n allows {limit}"
    );
    let relay = Relay::start_with(|c| c.open_enrollment = true).await;
    let server = relay.server.as_ref().expect("running");
    let addr = server.grpc_addr;
    // 200 from each of 10 addresses: under the default per-address cap (256), so every one
    // is admitted and held, waiting for a handshake that never comes.
    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000u32 {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i / 200) as u8);
        idle.push(tcp_from(from, addr).await);
    }
    eventually("2,000 connections admitted", || async {
        (server.relay.open_connections() >= 2000).then_some(())
    })
    .await;
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        serves_a_new_client(addr, "newcomer"),
    )
    .await
    .expect("a new client is served while 2,000 idle connections are open");
    // The issue asks for "within a second"; asserted with a margin for a loaded test machine.
    let took = started.elapsed();
    println!("new client served in {took:?} with 2,000 idle connections open");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_per_address_and_in_total_refuse_and_the_relay_keeps_serving() {
    let mut relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        c.limits.max_connections_per_address = 20;
        c.limits.max_connections = 50;
        c.limits.handshake_timeout_ms = 60_000;
    })
    .await;
    let server = relay.server.as_ref().expect("running");
    let addr = server.grpc_addr;
    // The harness's own channel is one connection from 127.0.0.1.

    // 30 from one address: 20 are admitted, 10 are closed at once.
    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(tcp_from(Ipv4Addr::new(127, 0, 0, 2), addr).await);
    }
    let mut closed = vec![false; flood.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.iter().filter(|c| **c).count() < 10 && Instant::now() < deadline {
        for (s, c) in flood.iter_mut().zip(closed.iter_mut()) {
            if !*c {
                *c = closed_within(s, Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        10,
        "connections past max_connections_per_address are closed, the others held"
    );
    eventually("the harness's and 20 flood connections open", || async {
        (server.relay.open_connections() == 21).then_some(())
    })
    .await;
    // Another address is served all the same.
    serves_a_new_client(addr, "alice").await;

    // Fill the total: 20 more from .3 and 9 from .4 make 50; the next one is refused.
    for _ in 0..20 {
        flood.push(tcp_from(Ipv4Addr::new(127, 0, 0, 3), addr).await);
    }
    eventually("41 connections open", || async {
        (server.relay.open_connections() == 41).then_some(())
    })
    .await;
    for _ in 0..9 {
        flood.push(tcp_from(Ipv4Addr::new(127, 0, 0, 4), addr).await);
    }
    eventually("50 connections open", || async {
        (server.relay.open_connections() == 50).then_some(())
    })
    .await;
    let mut refused = tcp_from(Ipv4Addr::new(127, 0, 0, 5), addr).await;
    assert!(
        closed_within(&mut refused, Duration::from_secs(5)).await,
        "a connection past max_connections is closed"
    );
    let metrics = server.relay.render_metrics();
    for reason in ["max_connections_per_address", "max_connections\""] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}")),
            "refusals by {reason} are counted:\n{metrics}"
        );
    }
    // Room again once the flood goes: the relay serves new clients.
    drop(flood);
    eventually("the flood's connections closed", || async {
        (server.relay.open_connections() <= 2).then_some(())
    })
    .await;
    serves_a_new_client(addr, "bob").await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_close_after_the_handshake_timeout() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        c.limits.handshake_timeout_ms = 300;
    })
    .await;
    let server = relay.server.as_ref().expect("running");
    let addr = server.grpc_addr;
    let mut silent = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    let mut preface_only = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    preface_only.write_all(PREFACE).await.expect("send preface");
    let mut not_http2 = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    not_http2
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send HTTP/1.1");
    for (what, s) in [
        ("silent", &mut silent),
        ("preface only", &mut preface_only),
        ("HTTP/1.1", &mut not_http2),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "a {what} connection is closed"
        );
    }
    let metrics = server.relay.render_metrics();
    assert!(
        metrics.contains("reason=\"handshake_timeout\""),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"bad_handshake\""), "{metrics}");
    // A client that completes the handshake in time is served.
    serves_a_new_client(addr, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_nothing_open_is_closed_after_the_idle_timeout_with_goaway() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        c.limits.idle_timeout_ms = 300;
    })
    .await;
    let addr = relay.server.as_ref().expect("running").grpc_addr;
    let mut idle = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    idle.write_all(PREFACE).await.expect("preface");
    idle.write_all(&EMPTY_SETTINGS).await.expect("settings");
    let kinds = silent_client_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        kinds.contains(&0x7),
        "GOAWAY before closing; got frame types {kinds:?}"
    );
    // Real clients reconnect when they next call: the harness's channel went idle too.
    let p = relay.party("alice").await;
    register(&p, "persistent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_capped() {
    let relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        c.limits.max_streams_per_connection = 3;
    })
    .await;
    let addr = relay.server.as_ref().expect("running").grpc_addr;

    // The relay announces the cap in its SETTINGS (SETTINGS_MAX_CONCURRENT_STREAMS = 0x3).
    let mut raw = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    raw.write_all(PREFACE).await.expect("preface");
    raw.write_all(&EMPTY_SETTINGS).await.expect("settings");
    let mut header = [0u8; 9];
    raw.read_exact(&mut header).await.expect("server SETTINGS");
    assert_eq!(header[3], 0x4, "the relay's first frame is SETTINGS");
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    raw.read_exact(&mut payload)
        .await
        .expect("SETTINGS payload");
    let max_streams = payload.chunks(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == 0x3)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    });
    assert_eq!(max_streams, Some(3));

    // A client holding three streams waits for a slot before a fourth is opened.
    let coord = relay.coordinator().await;
    let channel = connect(addr).await;
    let bob = login(
        &channel,
        "bob",
        cohort_crypto::identity::IdentityKey::generate(),
    )
    .await;
    let a = relay.party("alice").await;
    let s = create_session(&coord, &[&a, &bob]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(subscribe_messages(&bob, &s.session_id).await);
    }
    let fourth = {
        let bob_router = bob.router();
        let sid = s.session_id.clone();
        tokio::spawn(async move {
            let mut r = bob_router;
            r.subscribe_messages(cohort_wire::router::SubscribeMessagesRequest {
                session_id: sid,
                party_id: "bob".into(),
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth stream waits while three are open"
    );
    open.pop();
    let fourth = tokio::time::timeout(Duration::from_secs(10), fourth)
        .await
        .expect("the fourth stream opens once a slot is free")
        .expect("task");
    assert!(fourth.is_ok(), "{fourth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_the_grace_period_whatever_the_connections_do() {
    const GRACE: Duration = Duration::from_millis(1000);
    let mut relay = Relay::start_with(|c| {
        // These tests are about connections and rates, not identity: named parties log in.
        c.open_enrollment = true;
        c.limits.shutdown_grace_ms = GRACE.as_millis() as i64;
        c.limits.handshake_timeout_ms = 600_000;
        c.limits.idle_timeout_ms = 600_000;
    })
    .await;
    let server = relay.server.as_ref().expect("running");
    let addr = server.grpc_addr;
    let metrics_of = server.relay.clone();

    let silent = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    let mut preface_only = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    preface_only.write_all(PREFACE).await.expect("preface");
    let mut handshaken = tcp_from(Ipv4Addr::LOCALHOST, addr).await;
    handshaken.write_all(PREFACE).await.expect("preface");
    handshaken
        .write_all(&EMPTY_SETTINGS)
        .await
        .expect("settings");

    // A stream that cannot finish: bob subscribes and never reads, and 6 MiB wait for him,
    // more than his flow-control window, so the relay cannot even send the stream's end.
    let coord = relay.coordinator().await;
    let a = relay.party("alice").await;
    let bob_channel = connect(addr).await;
    let bob = login(
        &bob_channel,
        "bob",
        cohort_crypto::identity::IdentityKey::generate(),
    )
    .await;
    let s = create_session(&coord, &[&a, &bob]).await;
    join_all_ready(&[&a, &bob], &s).await;
    let big = vec![7u8; 1024 * 1024 - 1024];
    for _ in 0..6 {
        route(&a, &s.session_id, &["bob"], 1, &big).await;
    }
    let stuck = subscribe_messages(&bob, &s.session_id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    relay.shutdown().await;
    let took = started.elapsed();
    println!("shutdown took {took:?} (grace {GRACE:?})");
    assert!(
        took < GRACE + Duration::from_secs(5),
        "shutdown took {took:?}; the grace period is {GRACE:?}"
    );
    assert!(
        metrics_of
            .render_metrics()
            .contains("reason=\"shutdown_deadline\""),
        "the stuck connection was closed at the deadline"
    );
    drop((silent, preface_only, handshaken, stuck));
}
