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
    /// Most messages one GetPendingMessages answer holds.
    pub pending_page: usize,
    /// Most open sessions (and credentials) the sweeper examines per sweep.
    pub sweep_batch: usize,
    /// Most "delivered" marks the relay keeps in memory (they are not written to the store);
    /// past it they start over and GetMessageStatus reads "pending" for older deliveries.
    pub max_delivered_marks: usize,
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
            pending_page: 1000,
            sweep_batch: 256,
            max_delivered_marks: 1_000_000,
            open_enrollment: false,
        }
    }
}
