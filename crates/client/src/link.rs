//! The client's one mailbox stream to the relay (`cohort.v1.Mailbox/Open`): every send, ack
//! and [`crate::Inbox`] of a [`Client`] goes over it, multiplexed by session.
//!
//! A background task owns the stream. Callers hand it commands and wait for the answer; the
//! task batches what queued up meanwhile into one frame (one store write at the relay), and
//! when the stream breaks or the relay restarts it opens a new one and restores everything:
//!
//! - **Sends** not yet answered are sent again, in their order, with their client ids, so
//!   the relay answers those it already stored with the original message id.
//! - **Subscriptions** resume after the last seq acknowledged up to; what was handed to the
//!   reader and not acknowledged comes again and is dropped here by message id.
//! - **Acks** not yet answered are sent again (acknowledging twice is harmless).
//!
//! Acks are cumulative when they can be: when the reader acknowledges every message up to
//! one (in seq order, the common case), one `Ack {up_to_seq}` settles them; a message acked
//! out of order is acknowledged by id.
//!
//! Flow control: each Inbox holds at most [`WINDOW`] messages. The relay is granted credit
//! for what the Inbox has room for, and more as the reader takes messages, so a reader that
//! stops reading stops the relay from sending (its messages wait in the relay's store).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use cohort_wire::cohort::client_frame::Frame;
use cohort_wire::cohort::server_frame::Frame as Pushed;
use cohort_wire::cohort::{
    Ack, AckIds, AckResult, ClientFrame, Credit, Delivery, Failure, SendBatch, SendItem,
    SendResult, ServerFrame, StreamMessage, Subscribe, SubscriptionEnded, Unsubscribe,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Streaming};

use crate::backoff::Backoff;
use crate::client::{Client, Inner};
use crate::error::ClientError;
use crate::inbox::Received;
use crate::seen::{Fate, Seen};

/// Messages an Inbox holds between the stream and its reader: the credit window.
pub(crate) const WINDOW: u32 = 256;
/// Most items in one SendBatch or AckIds frame (the relay's default `stream_batch`).
const FRAME_ITEMS: usize = 256;
/// Most payload bytes in one SendBatch frame (a single larger item goes alone).
const FRAME_BYTES: usize = 512 * 1024;

pub(crate) const SEND: &str = "Mailbox/Open send";
pub(crate) const ACK: &str = "Mailbox/Open ack";
const SUBSCRIBE: &str = "Mailbox/Open subscribe";
const OPEN: &str = "Mailbox/Open";

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;
/// An ack of one message of a session's Inbox at a seq, and who waits for it.
type SeqAck = (u64, String, Option<Reply<()>>);

/// A handle on the task; dropping it (with the last [`Client`]) stops the task.
pub(crate) struct Link {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) enum Command {
    Send {
        item: SendItem,
        reply: Reply<String>,
    },
    Ack {
        session_id: String,
        message_id: String,
        reply: Option<Reply<()>>,
    },
    /// The reader settled a message by other means (rejected it with a unary call).
    Settled {
        session_id: String,
        message_id: String,
        fate: Fate,
    },
    Subscribe {
        key: u64,
        session_id: String,
        inbox: InboxSide,
    },
    Unsubscribe {
        key: u64,
        session_id: String,
    },
    /// A reader took messages: the relay may be granted more.
    Taken,
}

/// The link's end of an Inbox.
pub(crate) struct InboxSide {
    pub(crate) items: mpsc::Sender<Received>,
    /// Why the subscription ended for good, read by the Inbox once `items` is drained.
    pub(crate) ended: Arc<Mutex<Option<ClientError>>>,
    /// Messages the reader has taken, so far.
    pub(crate) taken: Arc<AtomicU64>,
}

impl Link {
    pub(crate) fn spawn(
        inner: Weak<Inner>,
        url: String,
        party_id: String,
        options: crate::ClientOptions,
    ) -> Link {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Task {
                client: inner,
                url,
                party_id,
                options,
                commands: rx,
                next_local: 0,
                next_request: 0,
                sends: BTreeMap::new(),
                send_requests: HashMap::new(),
                ack_queue: Vec::new(),
                acks: HashMap::new(),
                acks_to_resend: Vec::new(),
                subs: HashMap::new(),
                unsubscribes: Vec::new(),
                failures: 0,
            }
            .run(),
        );
        Link { commands, task }
    }

    pub(crate) fn command(&self, c: Command) -> bool {
        self.commands.send(c).is_ok()
    }
}

struct PendingSend {
    item: SendItem,
    reply: Reply<String>,
    /// Written on the current stream (answered or lost with it).
    sent: bool,
}

enum AckFrame {
    UpTo { session_id: String, up_to_seq: u64 },
    Ids(Vec<String>),
}

/// An ack frame written and not yet answered, and who waits for it.
struct PendingAck {
    frame: AckFrame,
    waiters: Vec<(String, Reply<()>)>,
}

struct Sub {
    key: u64,
    inbox: InboxSide,
    seen: Seen,
    /// Messages handed to the reader and not yet covered by a cumulative ack: seq -> (id,
    /// settled by the reader).
    seqs: BTreeMap<u64, (String, bool)>,
    ids: HashMap<String, u64>,
    /// The relay committed acks of everything up to here: where a new subscription resumes.
    committed: u64,
    /// Subscribe (again) on the next flush.
    subscribe: bool,
    /// Credit granted to the current subscription, and messages it delivered.
    granted: u64,
    received: u64,
    /// Messages put in the Inbox.
    pushed: u64,
}

impl Sub {
    fn in_inbox(&self) -> u64 {
        self.pushed
            .saturating_sub(self.inbox.taken.load(Ordering::Relaxed))
    }

    /// Credit that keeps the Inbox from overflowing: room in it minus what the relay may
    /// still send.
    fn room(&self) -> u64 {
        let remaining = self.granted.saturating_sub(self.received);
        u64::from(WINDOW)
            .saturating_sub(self.in_inbox())
            .saturating_sub(remaining)
    }

    fn end(self, e: ClientError) {
        *self.inbox.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        // Dropping `items` ends the Inbox once its reader has taken what is in it.
    }
}

struct Task {
    client: Weak<Inner>,
    url: String,
    party_id: String,
    options: crate::ClientOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Orders sends: they are written (and written again) in this order.
    next_local: u64,
    next_request: u64,
    sends: BTreeMap<u64, PendingSend>,
    /// Request id -> the sends of that SendBatch, on the current stream.
    send_requests: HashMap<u64, Vec<u64>>,
    /// Acks asked for and not yet written: (session, message id, who waits).
    ack_queue: Vec<(String, String, Option<Reply<()>>)>,
    acks: HashMap<u64, PendingAck>,
    acks_to_resend: Vec<PendingAck>,
    subs: HashMap<String, Sub>,
    unsubscribes: Vec<String>,
    /// Failed attempts to open the stream since it was last open.
    failures: u32,
}

/// Why a stream stopped.
enum Stopped {
    /// Every [`Client`] is gone: stop for good.
    Gone,
    /// It broke; open another.
    Broke,
}

fn refused(url: &str, rpc: &'static str, f: Option<&Failure>) -> ClientError {
    let Some(f) = f else {
        return ClientError::bad_response(url, rpc, "a refusal without its failure");
    };
    ClientError::Rpc {
        url: url.to_string(),
        rpc,
        code: Code::from_i32(f.code),
        message: f.message.clone(),
        culprit: (!f.culprit.is_empty()).then(|| f.culprit.clone()),
    }
}

fn frame(f: Frame) -> ClientFrame {
    ClientFrame { frame: Some(f) }
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.options.backoff_initial, self.options.backoff_max);
        loop {
            // Commands wait in the channel meanwhile; opening is bounded by request_timeout.
            match self.open().await {
                Ok(Some((out, inbound))) => {
                    self.failures = 0;
                    backoff.reset();
                    match self.serve(out, inbound).await {
                        Stopped::Gone => return,
                        Stopped::Broke => self.broke(),
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.failures += 1;
                    let lasting = !e.is_transient() && e.code() != Some(Code::Unauthenticated);
                    if lasting || self.failures >= self.options.call_attempts.max(1) {
                        self.fail_calls(&e);
                    }
                    if lasting {
                        // Nothing will open this stream (no Mailbox service, say): end every
                        // Inbox with the reason.
                        for (_, sub) in self.subs.drain() {
                            sub.end(e.clone());
                        }
                    }
                    tracing::debug!(relay = %self.url, error = %e, "cannot open the mailbox stream yet; retrying");
                }
            }
            let wait = backoff.next_delay();
            let until = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    gone = self.take_commands() => if gone { return },
                }
            }
        }
    }

    /// Waits for commands and records them (while no stream is open). True when every
    /// client is gone.
    async fn take_commands(&mut self) -> bool {
        match self.commands.recv().await {
            None => true,
            Some(c) => {
                self.accept(c);
                false
            }
        }
    }

    /// Opens the stream, logging in again once if the token expired. `None`: every client
    /// is gone.
    async fn open(
        &self,
    ) -> Result<Option<(mpsc::UnboundedSender<ClientFrame>, Streaming<ServerFrame>)>, ClientError>
    {
        let mut relogged = false;
        loop {
            let Some(inner) = self.client.upgrade() else {
                return Ok(None);
            };
            let client = Client { inner };
            let generation = client.token_generation();
            let (out, rx) = mpsc::unbounded_channel();
            let mut rpc = client.mailbox_rpc();
            let opening = rpc.open(UnboundedReceiverStream::new(rx));
            let status = match tokio::time::timeout(self.options.request_timeout, opening).await {
                Ok(Ok(response)) => return Ok(Some((out, response.into_inner()))),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.options.request_timeout
                )),
            };
            let e = ClientError::rpc(&self.url, OPEN, &status);
            if status.code() == Code::Unauthenticated && !relogged {
                relogged = true;
                client.relogin(generation).await?;
                continue;
            }
            return Err(e);
        }
    }

    /// Runs one open stream until it breaks or every client is gone.
    async fn serve(
        &mut self,
        out: mpsc::UnboundedSender<ClientFrame>,
        mut inbound: Streaming<ServerFrame>,
    ) -> Stopped {
        if !self.flush(&out) {
            return Stopped::Broke;
        }
        loop {
            tokio::select! {
                c = self.commands.recv() => match c {
                    None => return Stopped::Gone,
                    Some(c) => {
                        self.accept(c);
                        while let Ok(c) = self.commands.try_recv() {
                            self.accept(c);
                        }
                    }
                },
                m = inbound.message() => match m {
                    Ok(Some(f)) => {
                        if let Some(f) = f.frame {
                            self.on_frame(f);
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(relay = %self.url, "mailbox stream ended; reopening");
                        return Stopped::Broke;
                    }
                    Err(status) => {
                        tracing::debug!(relay = %self.url, error = %ClientError::rpc(&self.url, OPEN, &status), "mailbox stream broke; reopening");
                        return Stopped::Broke;
                    }
                },
            }
            if !self.flush(&out) {
                return Stopped::Broke;
            }
        }
    }

    /// The stream broke: what was written on it and not answered is written again on the
    /// next one.
    fn broke(&mut self) {
        for (_, locals) in self.send_requests.drain() {
            for l in locals {
                if let Some(s) = self.sends.get_mut(&l) {
                    s.sent = false;
                }
            }
        }
        let acks: Vec<PendingAck> = self.acks.drain().map(|(_, a)| a).collect();
        self.acks_to_resend.extend(acks);
        for sub in self.subs.values_mut() {
            sub.subscribe = true;
        }
        self.unsubscribes.clear();
    }

    /// Fails every call waiting for an answer (the relay cannot be reached).
    fn fail_calls(&mut self, e: &ClientError) {
        for (_, s) in std::mem::take(&mut self.sends) {
            let _ = s.reply.send(Err(e.clone()));
        }
        self.send_requests.clear();
        for (_, _, reply) in self.ack_queue.drain(..) {
            if let Some(r) = reply {
                let _ = r.send(Err(e.clone()));
            }
        }
        let pending: Vec<PendingAck> = self
            .acks
            .drain()
            .map(|(_, a)| a)
            .chain(self.acks_to_resend.drain(..))
            .collect();
        for a in pending {
            for (_, r) in a.waiters {
                let _ = r.send(Err(e.clone()));
            }
        }
    }

    fn accept(&mut self, c: Command) {
        match c {
            Command::Send { item, reply } => {
                self.next_local += 1;
                self.sends.insert(
                    self.next_local,
                    PendingSend {
                        item,
                        reply,
                        sent: false,
                    },
                );
            }
            Command::Ack {
                session_id,
                message_id,
                reply,
            } => self.ack_queue.push((session_id, message_id, reply)),
            Command::Settled {
                session_id,
                message_id,
                fate,
            } => {
                if let Some(sub) = self.subs.get_mut(&session_id) {
                    sub.seen.record(&message_id, fate);
                    if let Some(seq) = sub.ids.get(&message_id) {
                        if let Some(e) = sub.seqs.get_mut(seq) {
                            e.1 = true;
                        }
                    }
                }
            }
            Command::Subscribe {
                key,
                session_id,
                inbox,
            } => {
                let sub = Sub {
                    key,
                    inbox,
                    seen: Seen::new(self.options.seen_capacity),
                    seqs: BTreeMap::new(),
                    ids: HashMap::new(),
                    committed: 0,
                    subscribe: true,
                    granted: 0,
                    received: 0,
                    pushed: 0,
                };
                if let Some(old) = self.subs.insert(session_id.clone(), sub) {
                    old.end(ClientError::StreamClosed {
                        url: self.url.clone(),
                        what: format!("mailbox of session {session_id}"),
                        reason: "another Inbox of this client opened the same mailbox".into(),
                    });
                }
            }
            Command::Unsubscribe { key, session_id } => {
                if self.subs.get(&session_id).is_some_and(|s| s.key == key) {
                    self.subs.remove(&session_id);
                    self.unsubscribes.push(session_id);
                }
            }
            // Checked on every flush.
            Command::Taken => {}
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Writes everything waiting to be written. False if the stream is gone.
    fn flush(&mut self, out: &mpsc::UnboundedSender<ClientFrame>) -> bool {
        let mut frames = Vec::new();
        for session_id in self.unsubscribes.drain(..) {
            frames.push(frame(Frame::Unsubscribe(Unsubscribe { session_id })));
        }
        for (session_id, sub) in self.subs.iter_mut() {
            if sub.subscribe {
                sub.subscribe = false;
                sub.granted = 0;
                sub.received = 0;
                let credit = sub.room();
                sub.granted = credit;
                frames.push(frame(Frame::Subscribe(Subscribe {
                    session_id: session_id.clone(),
                    party_id: self.party_id.clone(),
                    after_seq: sub.committed,
                    credit: u32::try_from(credit).unwrap_or(u32::MAX),
                    subscription_id: sub.key,
                })));
            } else {
                let room = sub.room();
                let remaining = sub.granted.saturating_sub(sub.received);
                if room > 0 && (room >= u64::from(WINDOW / 4) || remaining == 0) {
                    sub.granted += room;
                    frames.push(frame(Frame::Credit(Credit {
                        session_id: session_id.clone(),
                        n: u32::try_from(room).unwrap_or(u32::MAX),
                    })));
                }
            }
        }
        self.flush_acks(&mut frames);
        self.flush_sends(&mut frames);
        frames.into_iter().all(|f| out.send(f).is_ok())
    }

    fn flush_sends(&mut self, frames: &mut Vec<ClientFrame>) {
        let unsent: Vec<u64> = self
            .sends
            .iter()
            .filter(|(_, s)| !s.sent)
            .map(|(l, _)| *l)
            .collect();
        let mut batch: Vec<u64> = Vec::new();
        let mut bytes = 0;
        for l in unsent {
            let size = self.sends.get(&l).map_or(0, |s| s.item.payload.len());
            if !batch.is_empty() && (batch.len() >= FRAME_ITEMS || bytes + size > FRAME_BYTES) {
                let b = std::mem::take(&mut batch);
                frames.push(self.send_frame(b));
                bytes = 0;
            }
            batch.push(l);
            bytes += size;
        }
        if !batch.is_empty() {
            frames.push(self.send_frame(batch));
        }
    }

    fn send_frame(&mut self, locals: Vec<u64>) -> ClientFrame {
        let request_id = self.request_id();
        let mut items = Vec::with_capacity(locals.len());
        for l in &locals {
            if let Some(s) = self.sends.get_mut(l) {
                s.sent = true;
                items.push(s.item.clone());
            }
        }
        self.send_requests.insert(request_id, locals);
        frame(Frame::Send(SendBatch { request_id, items }))
    }

    fn flush_acks(&mut self, frames: &mut Vec<ClientFrame>) {
        for a in std::mem::take(&mut self.acks_to_resend) {
            frames.push(self.ack_frame(a));
        }
        if self.ack_queue.is_empty() {
            return;
        }
        let mut by_id: Vec<(String, Option<Reply<()>>)> = Vec::new();
        let mut cumulative: HashMap<String, Vec<SeqAck>> = HashMap::new();
        for (session_id, message_id, reply) in std::mem::take(&mut self.ack_queue) {
            let Some(sub) = self.subs.get_mut(&session_id) else {
                by_id.push((message_id, reply));
                continue;
            };
            sub.seen.record(&message_id, Fate::Acked);
            match sub.ids.get(&message_id).copied() {
                Some(seq) => {
                    if let Some(e) = sub.seqs.get_mut(&seq) {
                        e.1 = true;
                    }
                    cumulative
                        .entry(session_id)
                        .or_default()
                        .push((seq, message_id, reply));
                }
                None => by_id.push((message_id, reply)),
            }
        }
        for (session_id, acked) in cumulative {
            let Some(sub) = self.subs.get_mut(&session_id) else {
                continue;
            };
            // The settled prefix: everything up to there can go in one cumulative ack.
            let mut up_to = None;
            while let Some(entry) = sub.seqs.first_entry() {
                if !entry.get().1 {
                    break;
                }
                let (seq, (id, _)) = entry.remove_entry();
                sub.ids.remove(&id);
                up_to = Some(seq);
            }
            let mut waiters = Vec::new();
            for (seq, id, reply) in acked {
                if up_to.is_some_and(|u| seq <= u) {
                    if let Some(r) = reply {
                        waiters.push((id, r));
                    }
                } else {
                    by_id.push((id, reply));
                }
            }
            if let Some(up_to_seq) = up_to {
                let a = PendingAck {
                    frame: AckFrame::UpTo {
                        session_id,
                        up_to_seq,
                    },
                    waiters,
                };
                frames.push(self.ack_frame(a));
            }
        }
        while !by_id.is_empty() {
            let rest = by_id.split_off(by_id.len().min(FRAME_ITEMS));
            let chunk = std::mem::replace(&mut by_id, rest);
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let waiters = chunk
                .into_iter()
                .filter_map(|(id, r)| r.map(|r| (id, r)))
                .collect();
            let a = PendingAck {
                frame: AckFrame::Ids(ids),
                waiters,
            };
            frames.push(self.ack_frame(a));
        }
    }

    fn ack_frame(&mut self, a: PendingAck) -> ClientFrame {
        let request_id = self.request_id();
        let f = match &a.frame {
            AckFrame::UpTo {
                session_id,
                up_to_seq,
            } => Frame::Ack(Ack {
                request_id,
                session_id: session_id.clone(),
                up_to_seq: *up_to_seq,
            }),
            AckFrame::Ids(ids) => Frame::AckIds(AckIds {
                request_id,
                message_ids: ids.clone(),
            }),
        };
        self.acks.insert(request_id, a);
        frame(f)
    }

    fn on_frame(&mut self, f: Pushed) {
        match f {
            Pushed::Delivery(d) => self.on_delivery(d),
            Pushed::Ended(e) => self.on_ended(e),
            Pushed::SendResult(r) => self.on_sent(r),
            Pushed::AckResult(r) => self.on_acked(r),
            Pushed::Error(e) => {
                let err = refused(&self.url, OPEN, e.failure.as_ref());
                if let Some(locals) = self.send_requests.remove(&e.request_id) {
                    let err = refused(&self.url, SEND, e.failure.as_ref());
                    for l in locals {
                        if let Some(s) = self.sends.remove(&l) {
                            let _ = s.reply.send(Err(err.clone()));
                        }
                    }
                } else if let Some(a) = self.acks.remove(&e.request_id) {
                    let err = refused(&self.url, ACK, e.failure.as_ref());
                    for (_, r) in a.waiters {
                        let _ = r.send(Err(err.clone()));
                    }
                } else {
                    tracing::warn!(relay = %self.url, error = %err, "the relay refused a frame of the mailbox stream");
                }
            }
        }
    }

    fn on_delivery(&mut self, d: Delivery) {
        let Some(sub) = self.subs.get_mut(&d.session_id) else {
            return;
        };
        if sub.key != d.subscription_id {
            return;
        }
        sub.received += d.messages.len() as u64;
        for m in d.messages {
            if m.message_id.is_empty() {
                tracing::warn!(relay = %self.url, session = %d.session_id, "relay delivered a message without an id; dropped");
                continue;
            }
            match sub.seen.fate(&m.message_id) {
                None => {
                    let (id, seq) = (m.message_id.clone(), m.seq);
                    match sub.inbox.items.try_send(received(&d.session_id, m)) {
                        Ok(()) => {
                            sub.pushed += 1;
                            sub.seen.record(&id, Fate::Yielded);
                            sub.seqs.insert(seq, (id.clone(), false));
                            sub.ids.insert(id, seq);
                        }
                        // The Inbox is being dropped; its Unsubscribe is on the way.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // More than the credit granted: it stays unacknowledged at the
                            // relay and comes again on a new stream.
                            tracing::warn!(relay = %self.url, session = %d.session_id, "the relay sent more than the credit granted; a message will be delivered again");
                        }
                    }
                }
                Some(Fate::Yielded) => {
                    tracing::trace!(message = %m.message_id, "redelivered before the reader acknowledged it; dropped");
                }
                Some(Fate::Acked) => {
                    // The relay did not record our ack (it raced a reconnect or a restart).
                    self.ack_queue
                        .push((d.session_id.clone(), m.message_id, None));
                }
                Some(Fate::Rejected) => {
                    if let Some(inner) = self.client.upgrade() {
                        let client = Client { inner };
                        let session_id = d.session_id.clone();
                        tokio::spawn(async move {
                            if let Err(e) = client
                                .reject(&session_id, &m.message_id, "rejected earlier")
                                .await
                            {
                                tracing::warn!(message = %m.message_id, error = %e, "could not settle a redelivered message");
                            }
                        });
                    }
                }
            }
        }
    }

    fn on_ended(&mut self, e: SubscriptionEnded) {
        let Some(sub) = self.subs.get_mut(&e.session_id) else {
            return;
        };
        if sub.key != e.subscription_id {
            return;
        }
        let err = refused(&self.url, SUBSCRIBE, e.failure.as_ref());
        if err.is_transient() {
            tracing::debug!(relay = %self.url, error = %err, "subscription interrupted; subscribing again");
            sub.subscribe = true;
            return;
        }
        if let Some(sub) = self.subs.remove(&e.session_id) {
            sub.end(err);
        }
    }

    fn on_sent(&mut self, r: SendResult) {
        let Some(locals) = self.send_requests.remove(&r.request_id) else {
            return;
        };
        for (l, o) in locals.into_iter().zip(r.outcomes) {
            let Some(s) = self.sends.remove(&l) else {
                continue;
            };
            let result = match &o.failure {
                None if o.message_id.is_empty() => Err(ClientError::bad_response(
                    &self.url,
                    SEND,
                    "no message_id in the answer",
                )),
                None => Ok(o.message_id),
                Some(f) => Err(refused(&self.url, SEND, Some(f))),
            };
            let _ = s.reply.send(result);
        }
    }

    fn on_acked(&mut self, r: AckResult) {
        let Some(a) = self.acks.remove(&r.request_id) else {
            return;
        };
        if let AckFrame::UpTo {
            session_id,
            up_to_seq,
        } = &a.frame
        {
            if let Some(sub) = self.subs.get_mut(session_id) {
                sub.committed = sub.committed.max(*up_to_seq);
            }
        }
        let failed: HashMap<&str, &Option<Failure>> = r
            .failures
            .iter()
            .map(|f| (f.message_id.as_str(), &f.failure))
            .collect();
        for (id, reply) in a.waiters {
            let result = match failed.get(id.as_str()) {
                None => Ok(()),
                Some(f) => Err(refused(&self.url, ACK, f.as_ref())),
            };
            let _ = reply.send(result);
        }
    }
}

fn received(session_id: &str, m: StreamMessage) -> Received {
    Received {
        message_id: m.message_id,
        session_id: session_id.to_string(),
        from: m.from_party,
        round: m.round,
        message_type: m.message_type,
        is_broadcast: m.is_broadcast,
        payload: m.payload,
        created_at: m.created_at,
    }
}
