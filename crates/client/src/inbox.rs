//! Sending protocol messages and receiving a session's mailbox, over the client's mailbox
//! stream ([`crate::link`]).
//!
//! Delivery is at least once: the relay re-sends every message this party has not
//! acknowledged when the stream is reopened. An [`Inbox`] drops what it already yielded, by
//! message id, so the consumer sees each message once per `Inbox`; a new `Inbox` (a restarted
//! party) sees the unacknowledged ones again.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cohort_wire::cohort::SendItem;
use cohort_wire::router::{
    AcknowledgeMessageRequest, GetMessageStatusRequest, GetMessageStatusResponse,
};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;

use crate::client::Client;
use crate::error::ClientError;
use crate::link::{self, Command, InboxSide, WINDOW};
use crate::seen::Fate;

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

/// A session's mailbox for this party: yields each message once, in the relay's order, and
/// keeps going across dropped connections and relay restarts (the client's mailbox stream
/// resubscribes from the last seq acknowledged).
///
/// Acknowledge each message with [`Inbox::ack`] after processing it. Until then the relay
/// keeps it and re-sends it on reconnect (dropped here as a duplicate, since the consumer
/// has it); once acknowledged, a late redelivery is dropped and acknowledged again. Acks in
/// the order received are sent as one cumulative ack.
///
/// At most 256 messages wait here for the reader: a reader that stops
/// reading stops the relay from sending, and the rest waits in the relay's store.
///
/// Also a `Stream` of [`Received`] that ends only if the relay refuses the subscription for
/// good or the session closes ([`Inbox::error`] says why).
pub struct Inbox {
    client: Client,
    session_id: String,
    key: u64,
    items: mpsc::Receiver<Received>,
    ended: Arc<Mutex<Option<ClientError>>>,
    taken: Arc<AtomicU64>,
    /// Why the stream ended for good, once it has.
    error: Option<ClientError>,
}

/// Names Inboxes, so the mailbox stream tells a new Inbox of a session from an old one.
static INBOX_KEYS: AtomicU64 = AtomicU64::new(1);

impl Inbox {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The next new message, or the error that ended the mailbox stream.
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.items.recv().await {
            Some(m) => {
                self.took();
                Ok(m)
            }
            None => Err(self.close()),
        }
    }

    /// Why the stream ended, once it has.
    pub fn error(&self) -> Option<&ClientError> {
        self.error.as_ref()
    }

    /// Acknowledges a processed message: the relay will not deliver it again. Returns once
    /// the relay has committed the ack.
    pub async fn ack(&self, message_id: &str) -> Result<(), ClientError> {
        self.client.ack(&self.session_id, message_id).await
    }

    /// Settles a message as failed (it cannot be processed, e.g. it did not verify), with a
    /// reason the sender can read in its delivery status.
    pub async fn reject(&self, message_id: &str, reason: &str) -> Result<(), ClientError> {
        self.client
            .reject(&self.session_id, message_id, reason)
            .await
    }

    /// Counts a message taken by the reader, and lets the relay send more once a quarter of
    /// the window has been taken.
    fn took(&self) {
        let n = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(u64::from(WINDOW / 4)) {
            self.client.link().command(Command::Taken);
        }
    }

    fn close(&mut self) -> ClientError {
        let e = self
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| ClientError::StreamClosed {
                url: self.client.url().to_string(),
                what: format!("mailbox of session {}", self.session_id),
                reason: "the client's mailbox stream stopped".into(),
            });
        self.error = Some(e.clone());
        e
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.client.link().command(Command::Unsubscribe {
            key: self.key,
            session_id: self.session_id.clone(),
        });
    }
}

impl Stream for Inbox {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let this = self.get_mut();
        if this.error.is_some() {
            return Poll::Ready(None);
        }
        match this.items.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                this.took();
                Poll::Ready(Some(m))
            }
            Poll::Ready(None) => {
                this.close();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A fresh client id: 128 random bits, hex.
fn new_client_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
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
    ///
    /// Goes over the client's mailbox stream, batched with the client's other sends, under a
    /// fresh client id: if the stream drops or the relay restarts before the answer, the send
    /// is repeated on the next stream and the relay answers with the message it stored, so a
    /// retry never makes a copy. Fails after `call_attempts` failed attempts to reach the
    /// relay, or after `request_timeout`.
    pub async fn send<S: AsRef<str>>(
        &self,
        session_id: &str,
        to: &[S],
        round: i32,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, ClientError> {
        self.send_keyed(
            session_id,
            &new_client_id(),
            to,
            round,
            message_type,
            payload,
        )
        .await
    }

    /// [`Client::send`] under a client id of the caller's choosing (1..=128 printable ASCII
    /// chars, unique per sender within the session). Sending again with the same client id,
    /// from this or a restarted process, stores nothing and returns the first send's message
    /// id: a party that replays its protocol after a restart names each message the same way
    /// and the relay keeps one copy.
    pub async fn send_keyed<S: AsRef<str>>(
        &self,
        session_id: &str,
        client_id: &str,
        to: &[S],
        round: i32,
        message_type: &str,
        payload: Vec<u8>,
    ) -> Result<String, ClientError> {
        let item = SendItem {
            client_id: client_id.to_string(),
            session_id: session_id.to_string(),
            to_parties: to.iter().map(|p| p.as_ref().to_string()).collect(),
            round,
            message_type: message_type.to_string(),
            payload,
        };
        let (reply, answer) = oneshot::channel();
        self.ask(link::SEND, Command::Send { item, reply }, answer)
            .await
    }

    /// Hands a command to the mailbox stream and waits for its answer.
    async fn ask<T>(
        &self,
        rpc: &'static str,
        command: Command,
        answer: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let stopped = || ClientError::StreamClosed {
            url: self.url().to_string(),
            what: "the client's mailbox stream".into(),
            reason: "its background task stopped".into(),
        };
        if !self.link().command(command) {
            return Err(stopped());
        }
        let timeout = self.options().request_timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(ClientError::rpc(
                self.url(),
                rpc,
                &tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}")),
            )),
        }
    }

    /// Opens this party's mailbox for `session_id` on the client's mailbox stream. One Inbox
    /// per session at a time: a second one for the same session takes over, and the first
    /// ends.
    pub fn messages(&self, session_id: &str) -> Inbox {
        // Room for the whole window: the relay never sends more than the credit granted.
        let (items, rx) = mpsc::channel(WINDOW as usize);
        let ended = Arc::new(Mutex::new(None));
        let taken = Arc::new(AtomicU64::new(0));
        let key = INBOX_KEYS.fetch_add(1, Ordering::Relaxed);
        self.link().command(Command::Subscribe {
            key,
            session_id: session_id.to_string(),
            inbox: InboxSide {
                items,
                ended: ended.clone(),
                taken: taken.clone(),
            },
        });
        Inbox {
            client: self.clone(),
            session_id: session_id.to_string(),
            key,
            items: rx,
            ended,
            taken,
            error: None,
        }
    }

    /// Acknowledges message (or session event) `message_id` of `session_id` once processed;
    /// returns once the relay has committed it. Over the mailbox stream, batched with the
    /// client's other acks.
    pub async fn ack(&self, session_id: &str, message_id: &str) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Ack {
            session_id: session_id.to_string(),
            message_id: message_id.to_string(),
            reply: Some(reply),
        };
        self.ask(link::ACK, command, answer).await
    }

    /// Settles message `message_id` as failed with `reason`.
    pub async fn reject(
        &self,
        session_id: &str,
        message_id: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.settle(session_id, message_id, false, reason).await?;
        self.link().command(Command::Settled {
            session_id: session_id.to_string(),
            message_id: message_id.to_string(),
            fate: Fate::Rejected,
        });
        Ok(())
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

    /// AcknowledgeMessage (unary): rejections, which are rare and carry a reason.
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
