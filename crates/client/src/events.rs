//! Session lifecycle events for this party, as a stream that reconnects when it drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use cohort_wire::router::{DelegateUserShare, SubscribeSessionEventsRequest};
use tokio_stream::Stream;

use crate::client::Client;
use crate::error::ClientError;
use crate::resume::Resumable;
use crate::seen::Seen;

/// Event types the relay publishes.
pub mod event_type {
    pub const SESSION_CREATED: &str = "session_created";
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    pub const SESSION_STARTED: &str = "session_started";
    pub const SESSION_COMPLETED: &str = "session_completed";
    pub const SESSION_FAILED: &str = "session_failed";
    pub const SESSION_EXPIRED: &str = "session_expired";
}

/// One session lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub event_id: String,
    /// One of [`event_type`], or a type a coordinator published.
    pub event_type: String,
    pub session_id: String,
    pub n: i32,
    pub t: i32,
    pub selected_parties: Vec<String>,
    /// This party's join token (in `session_created` events for sessions it was selected for).
    pub join_token: Option<String>,
    /// Sign sessions: the digest to sign.
    pub message_hash: Vec<u8>,
    /// ms since the Unix epoch.
    pub created_at: i64,
    pub expires_at: i64,
    pub delegate_share: Option<DelegateUserShare>,
}

/// Session events for this party: a `Stream` of [`SessionEvent`] that reconnects with backoff
/// when the connection drops or the relay restarts, and drops events it already yielded.
/// The relay hands each stored event out once, so events published while no stream was open
/// arrive when one opens. The stream ends only if the relay refuses the subscription for
/// good; [`SessionEvents::error`] then says why.
pub struct SessionEvents {
    inner: Resumable<SessionEvent>,
}

impl SessionEvents {
    /// The next event, or the error that ended the stream.
    pub async fn next_event(&mut self) -> Result<SessionEvent, ClientError> {
        self.inner.recv().await
    }

    /// Why the stream ended, once it has.
    pub fn error(&self) -> Option<&ClientError> {
        self.inner.error()
    }
}

impl Stream for SessionEvents {
    type Item = SessionEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        self.get_mut().inner.poll_item(cx)
    }
}

impl Client {
    /// Acknowledges a session event once it is handled (for `session_created`: once the join
    /// token is stored). Until then the relay keeps the event and sends it again on the next
    /// subscription, so a party that stops while an event is on the way still gets it.
    pub async fn ack_event(&self, event: &SessionEvent) -> Result<(), ClientError> {
        self.ack(&event.session_id, &event.event_id).await
    }

    /// Subscribes to this party's session events of `event_types` (empty: all types).
    pub fn session_events(&self, event_types: &[&str]) -> SessionEvents {
        let types: Vec<String> = event_types.iter().map(|s| s.to_string()).collect();
        let me = self.party_id().to_string();
        let mut seen = Seen::new(self.options().seen_capacity);
        let inner = Resumable::spawn(
            self.clone(),
            "session events stream".to_string(),
            move |client: Client| {
                let req = SubscribeSessionEventsRequest {
                    party_id: client.party_id().to_string(),
                    event_types: types.clone(),
                };
                async move {
                    client
                        .call("MessageRouter/SubscribeSessionEvents", || {
                            let mut c = client.router();
                            let req = req.clone();
                            async move { c.subscribe_session_events(req).await }
                        })
                        .await
                }
            },
            move |e: cohort_wire::router::SessionEvent| {
                if !e.event_id.is_empty() && !seen.insert_new(&e.event_id) {
                    return None;
                }
                let join_token = e.join_tokens.get(&me).cloned();
                Some(SessionEvent {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    session_id: e.session_id,
                    n: e.threshold_n,
                    t: e.threshold_t,
                    selected_parties: e.selected_parties,
                    join_token,
                    message_hash: e.message_hash,
                    created_at: e.created_at,
                    expires_at: e.expires_at,
                    delegate_share: e.delegate_user_share,
                })
            },
        );
        SessionEvents { inner }
    }
}
