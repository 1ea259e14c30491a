//! Sending protocol messages and receiving a session's mailbox.
//!
//! Delivery is at least once: the relay re-sends every message this party has not
//! acknowledged each time the mailbox stream is reopened. An [`Inbox`] drops what it already
//! yielded, by message id, so the consumer sees each message once per `Inbox`; a new `Inbox`
//! (a restarted party) sees the unacknowledged ones again.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cohort_wire::router::{
    AcknowledgeMessageRequest, GetMessageStatusRequest, GetMessageStatusResponse, MpcMessage,
    RouteMessageRequest, SubscribeMessagesRequest,
};
use tokio_stream::Stream;

use crate::client::Client;
use crate::error::ClientError;
use crate::resume::Resumable;
use crate::seen::{Fate, Seen};

/// One message as this party received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub session_id: String,
    /// The sender's party id, as the relay authenticated it.
    pub from: String,
    pub round: i32,
    pub message_type: String,
    pub is_broadcast: bool,
    pub payload: Vec<u8>,
    /// ms since the Unix epoch, relay clock.
    pub created_at: i64,
}

/// A session's mailbox for this party: yields each message once, in the relay's order,
/// reopening the stream with backoff when the connection drops or the relay restarts.
///
/// Acknowledge each message with [`Inbox::ack`] after processing it. Until then the relay
/// keeps it and re-sends it on reconnect (dropped here as a duplicate, since the consumer
/// has it); once acknowledged, a late redelivery is dropped and acknowledged again.
///
/// Also a `Stream` of [`Received`] that ends only if the relay refuses the subscription for
/// good ([`Inbox::error`] says why).
pub struct Inbox {
    client: Client,
    session_id: String,
    seen: Arc<Mutex<Seen>>,
    inner: Resumable<Received>,
}

impl Inbox {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The next new message, or the error that ended the mailbox stream.
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        self.inner.recv().await
    }

    /// Why the stream ended, once it has.
    pub fn error(&self) -> Option<&ClientError> {
        self.inner.error()
    }

    /// Acknowledges a processed message: the relay will not deliver it again.
    pub async fn ack(&self, message_id: &str) -> Result<(), ClientError> {
        self.client.ack(&self.session_id, message_id).await?;
        self.settle(message_id, Fate::Acked);
        Ok(())
    }

    /// Settles a message as failed (it cannot be processed, e.g. it did not verify), with a
    /// reason the sender can read in its delivery status.
    pub async fn reject(&self, message_id: &str, reason: &str) -> Result<(), ClientError> {
        self.client
            .reject(&self.session_id, message_id, reason)
            .await?;
        self.settle(message_id, Fate::Rejected);
        Ok(())
    }

    fn settle(&self, message_id: &str, fate: Fate) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(message_id, fate);
    }
}

impl Stream for Inbox {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.get_mut().inner.poll_item(cx)
    }
}

/// What the inbox task does with one delivered message.
fn accept(
    client: &Client,
    session_id: &str,
    seen: &Mutex<Seen>,
    m: MpcMessage,
) -> Option<Received> {
    if m.message_id.is_empty() || m.session_id != session_id {
        tracing::warn!(relay = %client.url(), session = %session_id, message = %m.message_id, other_session = %m.session_id, "relay delivered a message without an id or for another session; dropped");
        return None;
    }
    let fate = {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let fate = seen.fate(&m.message_id);
        if fate.is_none() {
            seen.record(&m.message_id, Fate::Yielded);
        }
        fate
    };
    match fate {
        None => Some(Received {
            message_id: m.message_id,
            session_id: m.session_id,
            from: m.from_party,
            round: m.round_number,
            message_type: m.message_type,
            is_broadcast: m.is_broadcast,
            payload: m.payload,
            created_at: m.created_at,
        }),
        Some(Fate::Yielded) => {
            tracing::trace!(message = %m.message_id, "redelivered before the consumer acknowledged it; dropped");
            None
        }
        Some(settled) => {
            // The relay did not record our settlement in time (it raced the reconnect, or
            // was lost in a restart): settle again, it is idempotent.
            tracing::debug!(message = %m.message_id, "redelivered after it was settled; settling again");
            let client = client.clone();
            let session_id = session_id.to_string();
            tokio::spawn(async move {
                let r = if settled == Fate::Rejected {
                    client
                        .reject(&session_id, &m.message_id, "rejected earlier")
                        .await
                } else {
                    client.ack(&session_id, &m.message_id).await
                };
                if let Err(e) = r {
                    tracing::warn!(message = %m.message_id, error = %e, "could not settle a redelivered message");
                }
            });
            None
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Client {
    /// Sends `payload` in `session_id` to the parties in `to`, or to every other participant
    /// when `to` is empty (a broadcast). Returns the message id once the relay has stored it.
    /// Retried with backoff while the relay is unavailable (a bounded number of times), so
    /// a send across a relay restart succeeds; receivers drop exact redeliveries by id.
    pub async fn send<S: AsRef<str>>(
        &self,
        session_id: &str,
        to: &[S],
        round: i32,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, ClientError> {
        let req = RouteMessageRequest {
            session_id: session_id.to_string(),
            from_party: self.party_id().to_string(),
            to_parties: to.iter().map(|p| p.as_ref().to_string()).collect(),
            round_number: round,
            message_type: message_type.to_string(),
            payload,
        };
        let r = self
            .call("MessageRouter/RouteMessage", || {
                let mut c = self.router();
                let req = req.clone();
                async move { c.route_message(req).await }
            })
            .await?;
        if r.message_id.is_empty() {
            return Err(ClientError::bad_response(
                self.url(),
                "MessageRouter/RouteMessage",
                "no message_id in the answer",
            ));
        }
        Ok(r.message_id)
    }

    /// Opens this party's mailbox for `session_id`.
    pub fn messages(&self, session_id: &str) -> Inbox {
        let seen = Arc::new(Mutex::new(Seen::new(self.options().seen_capacity)));
        let session = session_id.to_string();
        let open_session = session.clone();
        let accept_seen = seen.clone();
        let accept_client = self.clone();
        let accept_session = session.clone();
        let inner = Resumable::spawn(
            self.clone(),
            format!("mailbox of session {session_id}"),
            move |client: Client| {
                let req = SubscribeMessagesRequest {
                    session_id: open_session.clone(),
                    party_id: client.party_id().to_string(),
                };
                async move {
                    client
                        .call("MessageRouter/SubscribeMessages", || {
                            let mut c = client.router();
                            let req = req.clone();
                            async move { c.subscribe_messages(req).await }
                        })
                        .await
                }
            },
            move |m: MpcMessage| accept(&accept_client, &accept_session, &accept_seen, m),
        );
        Inbox {
            client: self.clone(),
            session_id: session,
            seen,
            inner,
        }
    }

    /// Acknowledges message `message_id` of `session_id` (prefer [`Inbox::ack`], which also
    /// remembers it).
    pub async fn ack(&self, session_id: &str, message_id: &str) -> Result<(), ClientError> {
        self.settle(session_id, message_id, true, "").await
    }

    /// Settles message `message_id` as failed with `reason`.
    pub async fn reject(
        &self,
        session_id: &str,
        message_id: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.settle(session_id, message_id, false, reason).await
    }

    /// Per-recipient delivery state of a message this party sent (pending, delivered,
    /// acknowledged or failed, with retry counts).
    pub async fn message_status(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<GetMessageStatusResponse, ClientError> {
        let req = GetMessageStatusRequest {
            message_id: message_id.to_string(),
            session_id: session_id.to_string(),
        };
        self.call("MessageRouter/GetMessageStatus", || {
            let mut c = self.router();
            let req = req.clone();
            async move { c.get_message_status(req).await }
        })
        .await
    }

    async fn settle(
        &self,
        session_id: &str,
        message_id: &str,
        success: bool,
        reason: &str,
    ) -> Result<(), ClientError> {
        let req = AcknowledgeMessageRequest {
            message_id: message_id.to_string(),
            party_id: self.party_id().to_string(),
            session_id: session_id.to_string(),
            success,
            error_message: truncate_utf8(reason, 1024).to_string(),
        };
        self.call("MessageRouter/AcknowledgeMessage", || {
            let mut c = self.router();
            let req = req.clone();
            async move { c.acknowledge_message(req).await }
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abc", 2), "ab");
        assert_eq!(truncate_utf8("aé", 2), "a");
    }
}
