//! The streaming mailbox engine: what a front drives for one client connection that sends,
//! receives and acknowledges over one stream (`cohort.v1.Mailbox` on gRPC).
//!
//! - **Sends** go through one lane per stream: every batch queued while the previous write
//!   was in flight is written in the next one, so a stream's sends are stored in the order it
//!   sent them, with one store transaction per group of batches. Each item carries a client
//!   id; the core answers a repeated id with the first message's id (`cohort_core::stream`).
//! - **Acks** (up to a seq, or by id) go through a second lane the same way, one transaction
//!   per group.
//! - **Deliveries**: one task per subscribed session mailbox follows it from a seq, pushing
//!   what is waiting (from the store) and then what is committed (handed over in memory,
//!   `wake.rs`), in seq order and never more than the credit the client granted. A receiver
//!   that stops granting credit costs nothing more: the rest stays in the store.
//! - Handed-out copies are marked `delivered` in memory, as the router's streams do
//!   (`delivered.rs`); a subscription follows its mailbox with the same cursor as the feeds
//!   (`feed.rs`).
//!
//! Everything the client is to receive comes out of [`MailboxStream::next`], in the order it
//! happened; every answer comes after the commit it reports is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cohort_core::mailbox::{self, Delivery, MessageId};
use cohort_core::session::RouteRequest;
use cohort_core::store::StoreExt;
use cohort_core::stream::{self as rules, AckRequest, Acked, SendItem, Sent};
use cohort_core::{Error, Principal, Result};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::feed::{Cursor, Step};
use crate::service::{now_ms, Relay};
/// Items waiting for results (queued frames plus out-bound answers) per stream, in batches.
const QUEUE: usize = 64;

/// One send of a batch, as the client gave it; the sender is the stream's principal.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub client_id: String,
    pub session_id: String,
    /// Empty: every other participant (a broadcast).
    pub to_parties: Vec<String>,
    pub round: i32,
    pub message_type: String,
    pub payload: bytes::Bytes,
}

/// A stored send: its message id, and whether an earlier send with its client id stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAccepted {
    pub message_id: String,
    pub duplicate: bool,
}

/// The outcome of one send of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    pub client_id: String,
    pub result: Result<SendAccepted>,
}

/// A subscription to the caller's mailbox of one session.
#[derive(Debug, Clone)]
pub struct Subscribe {
    pub session_id: String,
    /// Must be the stream's principal.
    pub party_id: String,
    /// Deliver what is waiting with seq > this.
    pub after_seq: u64,
    /// Messages the engine may push before more credit is granted.
    pub credit: u32,
    /// The client's name for it, echoed in what it pushes.
    pub subscription_id: u64,
}

/// What the engine has for the client, in the order it happened.
#[derive(Debug)]
pub enum Pushed {
    /// Messages of one subscription, in seq order; each used one credit.
    Delivery {
        session_id: String,
        subscription_id: u64,
        messages: Vec<Delivery>,
    },
    /// A subscription ended (its session closed, with the reason and culprit) or was refused.
    Ended {
        session_id: String,
        subscription_id: u64,
        error: Error,
    },
    /// The answer to a send batch, one outcome per item in order, after the commit.
    Sent {
        request_id: u64,
        outcomes: Vec<SendOutcome>,
    },
    /// The answer to an ack, after the commit; `Err` if it was refused as a whole.
    Acked {
        request_id: u64,
        result: Result<Acked>,
    },
}

/// One client connection's mailbox stream, acting as one principal.
pub struct MailboxStream {
    relay: Arc<Relay>,
    who: Principal,
    subs: HashMap<String, Follower>,
    sends: mpsc::Sender<(u64, Vec<SendRequest>)>,
    acks: mpsc::Sender<(u64, AckRequest)>,
    out_tx: mpsc::Sender<Pushed>,
    out: mpsc::Receiver<Pushed>,
    stop: watch::Receiver<bool>,
}

/// A subscription's task and the state it shares with the stream.
struct Follower {
    subscription_id: u64,
    shared: Arc<Mutex<Shared>>,
    credit_added: Arc<Notify>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    credit: u64,
    /// The task pushed [`Pushed::Ended`] and stopped.
    ended: bool,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn shutting_down() -> Error {
    Error::unavailable("the relay is shutting down; reconnect to resume")
}

impl MailboxStream {
    /// Opens a stream for `who` (already authenticated by the front).
    pub fn open(relay: &Arc<Relay>, who: Principal) -> MailboxStream {
        let (out_tx, out) = mpsc::channel(QUEUE);
        let (sends, send_queue) = mpsc::channel(QUEUE);
        let (acks, ack_queue) = mpsc::channel(QUEUE);
        // The lanes end once the stream is gone and they have answered what was queued: a
        // batch being written still wakes its recipients after the commit.
        tokio::spawn(send_lane(
            relay.clone(),
            who.clone(),
            send_queue,
            out_tx.clone(),
        ));
        tokio::spawn(ack_lane(
            relay.clone(),
            who.clone(),
            ack_queue,
            out_tx.clone(),
        ));
        MailboxStream {
            relay: relay.clone(),
            stop: relay.shutdown_signal(),
            who,
            subs: HashMap::new(),
            sends,
            acks,
            out_tx,
            out,
        }
    }

    pub fn principal(&self) -> &Principal {
        &self.who
    }

    /// The next thing to push to the client. Waits until there is one; `Unavailable` once
    /// the relay shuts down.
    pub async fn next(&mut self) -> Result<Pushed> {
        if *self.stop.borrow_and_update() {
            return Err(shutting_down());
        }
        let pushed = tokio::select! {
            pushed = self.out.recv() => pushed.ok_or_else(shutting_down)?,
            _ = self.stop.changed() => return Err(shutting_down()),
        };
        if let Pushed::Ended {
            session_id,
            subscription_id,
            ..
        } = &pushed
        {
            // Its task has stopped: the subscription no longer counts. (A subscription that
            // replaced it under the same id has not ended.)
            let stopped = self
                .subs
                .get(session_id)
                .is_some_and(|f| f.subscription_id == *subscription_id && lock(&f.shared).ended);
            if stopped {
                self.subs.remove(session_id);
            }
        }
        Ok(pushed)
    }

    /// Subscribes to the caller's mailbox of a session, replacing an earlier subscription to
    /// it. Refusals (not a participant, too many subscriptions) are returned here.
    pub async fn subscribe(&mut self, s: Subscribe) -> Result<()> {
        let max = self.relay.limits().stream_subscriptions;
        if self.subs.len() >= max && !self.subs.contains_key(&s.session_id) {
            return Err(Error::exhausted(format!(
                "this stream already follows {max} sessions (stream_subscriptions); unsubscribe from one first"
            )));
        }
        let addr = self
            .relay
            .session_mailbox(self.who.clone(), s.session_id.clone(), s.party_id.clone())
            .await?;
        self.unsubscribe(&s.session_id);
        let shared = Arc::new(Mutex::new(Shared {
            credit: u64::from(s.credit),
            ..Shared::default()
        }));
        let credit_added = Arc::new(Notify::new());
        let follow = Cursor::new(self.relay.clone(), addr.clone(), s.after_seq);
        let task = tokio::spawn(follow_mailbox(
            follow,
            s.session_id.clone(),
            s.subscription_id,
            shared.clone(),
            credit_added.clone(),
            self.out_tx.clone(),
        ));
        self.subs.insert(
            s.session_id,
            Follower {
                subscription_id: s.subscription_id,
                shared,
                credit_added,
                task,
            },
        );
        Ok(())
    }

    /// Stops following a session; what was not acknowledged stays waiting.
    pub fn unsubscribe(&mut self, session_id: &str) {
        if let Some(f) = self.subs.remove(session_id) {
            f.stop();
        }
    }

    /// Lets a subscription push `n` more messages.
    pub fn grant(&mut self, session_id: &str, n: u32) -> Result<()> {
        let f = self.subs.get(session_id).ok_or_else(|| {
            Error::not_found(format!(
                "credit for session {session_id:?}, which this stream does not follow; subscribe first"
            ))
        })?;
        {
            let mut s = lock(&f.shared);
            s.credit = s.credit.saturating_add(u64::from(n));
        }
        f.credit_added.notify_one();
        Ok(())
    }

    fn within_batch(&self, field: &str, n: usize) -> Result<()> {
        let max = self.relay.limits().stream_batch.max(1);
        if n > max {
            return Err(Error::invalid(format!(
                "{field} has {n} entries; at most {max} per frame (stream_batch)"
            )));
        }
        Ok(())
    }

    /// The subscription id of the session's subscription, if there is one.
    pub fn subscription_id(&self, session_id: &str) -> Option<u64> {
        self.subs.get(session_id).map(|f| f.subscription_id)
    }

    /// Queues a batch of sends; answered by [`Pushed::Sent`] once stored. Waits while the
    /// stream has too many batches waiting (the front stops reading meanwhile).
    pub async fn send_batch(&self, request_id: u64, items: Vec<SendRequest>) -> Result<()> {
        self.within_batch("items", items.len())?;
        self.sends
            .send((request_id, items))
            .await
            .map_err(|_| shutting_down())
    }

    /// Queues an ack of everything waiting in the caller's mailbox of `session_id` up to
    /// `up_to_seq`; answered by [`Pushed::Acked`] once committed.
    pub async fn ack_up_to(
        &self,
        request_id: u64,
        session_id: String,
        up_to_seq: u64,
    ) -> Result<()> {
        let r = AckRequest::UpTo {
            session_id,
            up_to_seq,
        };
        self.acks
            .send((request_id, r))
            .await
            .map_err(|_| shutting_down())
    }

    /// Queues an ack of messages (or session events) by id; answered by [`Pushed::Acked`].
    pub async fn ack_ids(&self, request_id: u64, message_ids: Vec<String>) -> Result<()> {
        self.within_batch("message_ids", message_ids.len())?;
        self.acks
            .send((request_id, AckRequest::Ids(message_ids)))
            .await
            .map_err(|_| shutting_down())
    }
}

impl Drop for MailboxStream {
    fn drop(&mut self) {
        for (_, f) in self.subs.drain() {
            f.stop();
        }
    }
}

impl Follower {
    /// Ends the subscription's task; what was not acknowledged stays waiting.
    fn stop(self) {
        self.task.abort();
    }
}

/// Most items one send write takes, from as many queued batches as fit.
fn send_write_cap(relay: &Relay) -> usize {
    relay.limits().stream_batch.max(1) * 4
}

/// Writes the stream's send batches in order, each group of queued batches in one
/// transaction, and answers each batch after the commit.
async fn send_lane(
    relay: Arc<Relay>,
    who: Principal,
    mut queue: mpsc::Receiver<(u64, Vec<SendRequest>)>,
    out: mpsc::Sender<Pushed>,
) {
    let cap = send_write_cap(&relay);
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        let mut items = group[0].1.len();
        while items < cap {
            match queue.try_recv() {
                Ok(next) => {
                    items += next.1.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let answers = write_sends(&relay, &who, &group).await;
        for ((request_id, _), outcomes) in group.iter().zip(answers) {
            // The client may be gone; the sends are stored all the same.
            let _ = out
                .send(Pushed::Sent {
                    request_id: *request_id,
                    outcomes,
                })
                .await;
        }
    }
}

/// One transaction for a group of send batches; returns each batch's outcomes.
async fn write_sends(
    relay: &Arc<Relay>,
    who: &Principal,
    group: &[(u64, Vec<SendRequest>)],
) -> Vec<Vec<SendOutcome>> {
    let now = now_ms();
    let items: Vec<SendItem> = group
        .iter()
        .flat_map(|(_, batch)| batch.iter())
        .map(|s| SendItem {
            client_id: s.client_id.clone(),
            route: RouteRequest {
                session_id: s.session_id.clone(),
                from_party: who.id.clone(),
                to_parties: s.to_parties.clone(),
                round: s.round,
                message_type: s.message_type.clone(),
                payload: s.payload.clone(),
            },
        })
        .collect();
    // Made outside the transaction, which a store may run more than once.
    let ids: Vec<MessageId> = items.iter().map(|_| mailbox::new_message_id(now)).collect();
    let limits = relay.limits().clone();
    let writer = who.clone();
    let written = relay
        .store()
        .write(move |tx| rules::send_batch(tx, &writer, &items, &ids, now_ms(), &limits))
        .await;
    let client_ids = group
        .iter()
        .flat_map(|(_, batch)| batch.iter().map(|s| s.client_id.clone()));
    let outcomes: Vec<SendOutcome> = match written {
        Ok(sent) => client_ids
            .zip(sent)
            .map(|(client_id, sent)| SendOutcome {
                client_id,
                result: match sent {
                    Sent::Stored(message) => {
                        let message = Arc::new(message);
                        relay.stored(&message);
                        Ok(SendAccepted {
                            message_id: mailbox::message_id_string(&message.id),
                            duplicate: false,
                        })
                    }
                    Sent::Duplicate(id) => {
                        relay.metrics.sends_repeated.inc();
                        Ok(SendAccepted {
                            message_id: mailbox::message_id_string(&id),
                            duplicate: true,
                        })
                    }
                    Sent::Refused(e) => Err(e),
                },
            })
            .collect(),
        Err(e) => client_ids
            .map(|client_id| SendOutcome {
                client_id,
                result: Err(e.clone()),
            })
            .collect(),
    };
    let mut outcomes = outcomes.into_iter();
    group
        .iter()
        .map(|(_, batch)| outcomes.by_ref().take(batch.len()).collect())
        .collect()
}

/// Writes the stream's acks, each group of queued ones in one transaction, and answers each
/// after the commit.
async fn ack_lane(
    relay: Arc<Relay>,
    who: Principal,
    mut queue: mpsc::Receiver<(u64, AckRequest)>,
    out: mpsc::Sender<Pushed>,
) {
    let cap = relay.limits().stream_batch.max(1);
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < cap {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let requests: Vec<AckRequest> = group.iter().map(|(_, r)| r.clone()).collect();
        let writer = who.clone();
        let written = relay
            .store()
            .write(move |tx| rules::ack_batch(tx, &writer, &requests, now_ms()))
            .await;
        let results: Vec<Result<Acked>> = match written {
            Ok(results) => results,
            Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
        };
        for ((request_id, _), result) in group.iter().zip(results) {
            if let Ok(a) = &result {
                relay.metrics.messages_acked.inc_by(a.settled);
            }
            let _ = out
                .send(Pushed::Acked {
                    request_id: *request_id,
                    result,
                })
                .await;
        }
    }
}

/// A subscription's task: hands out what the mailbox holds, within credit, until the session
/// closes, the subscription is dropped or the relay shuts down.
async fn follow_mailbox(
    mut follow: Cursor,
    session_id: String,
    subscription_id: u64,
    shared: Arc<Mutex<Shared>>,
    credit_added: Arc<Notify>,
    out: mpsc::Sender<Pushed>,
) {
    let relay = follow.relay.clone();
    let batch = relay.limits().stream_batch.max(1);
    let end = |error: Error| {
        lock(&shared).ended = true;
        Pushed::Ended {
            session_id: session_id.clone(),
            subscription_id,
            error,
        }
    };
    loop {
        let credit = lock(&shared).credit;
        if credit == 0 {
            tokio::select! {
                _ = credit_added.notified() => {}
                _ = follow.stop.changed() => return,
            }
            continue;
        }
        let limit = usize::try_from(credit).unwrap_or(usize::MAX).min(batch);
        match follow.step(limit).await {
            Ok(Step::Batch(messages)) => {
                {
                    let mut s = lock(&shared);
                    s.credit = s.credit.saturating_sub(messages.len() as u64);
                }
                let seqs: Vec<u64> = messages.iter().map(|d| d.seq).collect();
                relay.mark_delivered(&follow.addr, &seqs);
                let pushed = Pushed::Delivery {
                    session_id: session_id.clone(),
                    subscription_id,
                    messages,
                };
                if out.send(pushed).await.is_err() {
                    return;
                }
            }
            Ok(Step::Idle { read_store }) => {
                if read_store {
                    match relay.session_closed(session_id.clone()).await {
                        Ok(None) => {}
                        Ok(Some(closed)) => {
                            let _ = out.send(end(closed)).await;
                            return;
                        }
                        Err(e) => {
                            let _ = out.send(end(e)).await;
                            return;
                        }
                    }
                }
                if follow.wait().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !*follow.stop.borrow() {
                    let _ = out.send(end(e)).await;
                }
                return;
            }
        }
    }
}
