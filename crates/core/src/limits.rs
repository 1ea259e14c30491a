//! The numbers the rules enforce. Every one has a default and can be set in the server config.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the only clock the core knows. The caller passes `now`.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload of one message, in bytes.
    pub max_payload_bytes: usize,
    /// Most recipients one message may name.
    pub max_recipients: usize,
    /// Most messages waiting (not acknowledged) in one mailbox.
    pub max_mailbox_depth: u64,
    /// Largest party n a session may have.
    pub max_session_parties: u16,
    /// How long a login challenge may be answered.
    pub challenge_ttl_ms: Millis,
    /// How long an access token is valid.
    pub token_ttl_ms: Millis,
    /// A party is online if its last heartbeat is this recent.
    pub online_window_ms: Millis,
    /// Default session lifetime when the creator does not set one.
    pub session_ttl_ms: Millis,
    /// Longest session lifetime a creator may ask for.
    pub max_session_ttl_ms: Millis,
    /// A session that makes no progress for this long fails, naming whom it waits for.
    pub stall_timeout_ms: Millis,
    /// The stall timeout when a participant is in offline mode (has a notification channel).
    pub offline_stall_timeout_ms: Millis,
    /// How long a closed session's messages are kept (for status queries) before purge.
    pub retention_ms: Millis,
    /// How long an undelivered message that belongs to no session lives.
    pub message_ttl_ms: Millis,
    /// Most messages a stream reads from the store (or hands over) at a time.
    pub stream_batch: usize,
    /// Most messages a subscribed mailbox keeps in memory for live hand-over, and their
    /// total payload bytes.
    pub stream_recent_messages: usize,
    pub stream_recent_bytes: usize,
    /// Most event types one event subscription may filter on.
    pub max_event_types: usize,
    /// Most session mailboxes one streaming connection (cohort.v1.Mailbox) may subscribe to.
    pub stream_subscriptions: usize,
    /// Most messages one GetPendingMessages answer holds.
    pub pending_page: usize,
    /// Most open sessions (and credentials) the sweeper examines per sweep.
    pub sweep_batch: usize,
    /// Most "delivered" marks the relay keeps in memory (they are not written to the store);
    /// past it they start over and GetMessageStatus reads "pending" for older deliveries.
    pub max_delivered_marks: usize,

    // ---- connections, for every front (gRPC today; QUIC, WebSocket, ZeroMQ later) -------
    /// A new connection that has not finished its protocol's handshake within this long is
    /// closed (HTTP/2: the client preface and its first SETTINGS frame).
    pub handshake_timeout_ms: Millis,
    /// A connection with no call or stream open for this long is closed (HTTP/2: GOAWAY,
    /// then close); clients reconnect when they next have something to say.
    pub idle_timeout_ms: Millis,
    /// How often the relay pings a connection that is open (HTTP/2 PING)...
    pub keepalive_interval_ms: Millis,
    /// ...and how long an answer may take before the connection is closed as dead.
    pub keepalive_timeout_ms: Millis,
    /// Most calls and streams open at once on one connection; more are refused by the
    /// protocol (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Most connections open at once, over every front. A connection past it is closed as
    /// soon as it is accepted, counted and logged. Keep it below the process's file
    /// descriptor limit (`ulimit -n`); the server raises its soft limit to fit when it can.
    pub max_connections: usize,
    /// Most connections open at once from one source address (an IPv6 /64 counts as one).
    pub max_connections_per_address: usize,
    /// On shutdown, how long open connections get to finish their calls; then they are
    /// closed, so a stop (SIGTERM) takes at most about this long.
    pub shutdown_grace_ms: Millis,

    // ---- rates: sustained calls per second, with bursts up to the same number; 0 is off --
    /// Every call from one source address, before anything else is done for it.
    pub calls_per_second_per_address: u32,
    /// Every authenticated call of one identity (party id).
    pub calls_per_second_per_identity: u32,
    /// GetChallenge from one source address.
    pub challenges_per_second_per_address: u32,
    /// Login from one source address.
    pub logins_per_second_per_address: u32,
    /// CreateSession by one identity.
    pub sessions_per_second_per_identity: u32,
    /// RouteMessage by one identity.
    pub routes_per_second_per_identity: u32,
    /// Streams (SubscribeMessages, SubscribeSessionEvents) opened by one identity.
    pub streams_per_second_per_identity: u32,
    /// Most login challenges stored at once; issuing one more evicts the oldest (which can
    /// then no longer be answered).
    pub max_challenges: u64,
    /// Development only: a party id not yet enrolled is bound to the first key that logs in
    /// with it (the behaviour before enrollment). Off, an unenrolled key may log in only
    /// under its own key-derived id. Set by the server config's top-level `open_enrollment`
    /// (`COHORT_OPEN_ENROLLMENT`), never in `[limits]`.
    #[serde(skip)]
    pub open_enrollment: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_recipients: 1000,
            max_mailbox_depth: 1_000_000,
            max_session_parties: 1000,
            challenge_ttl_ms: 60_000,
            token_ttl_ms: 24 * 3600 * 1000,
            online_window_ms: 30_000,
            session_ttl_ms: 10 * 60 * 1000,
            max_session_ttl_ms: 7 * 24 * 3600 * 1000,
            stall_timeout_ms: 60_000,
            offline_stall_timeout_ms: 24 * 3600 * 1000,
            retention_ms: 24 * 3600 * 1000,
            message_ttl_ms: 24 * 3600 * 1000,
            stream_batch: 256,
            stream_recent_messages: 512,
            stream_recent_bytes: 8 * 1024 * 1024,
            max_event_types: 64,
            stream_subscriptions: 1024,
            pending_page: 1000,
            sweep_batch: 256,
            max_delivered_marks: 1_000_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 20_000,
            max_streams_per_connection: 100,
            max_connections: 10_000,
            max_connections_per_address: 256,
            shutdown_grace_ms: 10_000,
            calls_per_second_per_address: 5_000,
            calls_per_second_per_identity: 1_000,
            challenges_per_second_per_address: 100,
            logins_per_second_per_address: 100,
            sessions_per_second_per_identity: 100,
            routes_per_second_per_identity: 1_000,
            streams_per_second_per_identity: 50,
            max_challenges: 100_000,
            open_enrollment: false,
        }
    }
}
