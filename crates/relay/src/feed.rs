//! The delivery engine: a feed pushes one mailbox to one stream, first what is waiting (from
//! the store, in seq order), then live arrivals, handed over in memory while the stream is
//! caught up. The store stays the truth: any gap is read back from it.
//!
//! Every front streams from a feed and only encodes what it yields; how a stream ends (a
//! closed session, shutdown) is decided here and returned as a core error.

use std::sync::Arc;

use cohort_core::codec;
use cohort_core::mailbox::{Delivery, MailboxAddr};
use cohort_core::session::SessionEvent;
use cohort_core::{Error, Principal, Result};
use tokio::sync::watch;

use crate::service::{now_ms, Relay};
use crate::wake::Subscription;

/// Follows one mailbox from a cursor: the part every feed and the streaming engine's
/// subscriptions share.
pub(crate) struct Cursor {
    pub(crate) relay: Arc<Relay>,
    pub(crate) addr: MailboxAddr,
    sub: Subscription,
    pub(crate) stop: watch::Receiver<bool>,
    /// Highest seq handed out (or known to hold nothing waiting).
    seq: u64,
    batch: usize,
    /// The mailbox's wakeup count when this cursor last read the store and found nothing
    /// more: while it stands and memory has handed over nothing past `seq`, the stream is
    /// caught up without asking the store again.
    read_at: Option<u64>,
}

pub(crate) enum Step {
    Batch(Vec<Delivery>),
    /// Nothing waiting right now; `read_store` says whether the store was asked (after a
    /// wakeup that carried no message, or to catch up), so lifecycle checks run then only.
    Idle {
        read_store: bool,
    },
}

impl Cursor {
    /// Follows `addr` from just after `after_seq`.
    pub(crate) fn new(relay: Arc<Relay>, addr: MailboxAddr, after_seq: u64) -> Self {
        // Subscribed before the caller returns, so the stream counts as live at once and no
        // commit between now and the first read is missed.
        let sub = relay.subscribe(&addr);
        let stop = relay.shutdown_signal();
        let batch = relay.limits().stream_batch.max(1);
        Cursor {
            relay,
            addr,
            sub,
            stop,
            seq: after_seq,
            batch,
            read_at: None,
        }
    }

    fn stopping(&mut self) -> Result<()> {
        if *self.stop.borrow_and_update() {
            return Err(Error::unavailable(
                "the relay is shutting down; reconnect to resume",
            ));
        }
        Ok(())
    }

    /// One look at the mailbox past the cursor, for at most `limit` messages (at most the
    /// stream batch).
    pub(crate) async fn step(&mut self, limit: usize) -> Result<Step> {
        let limit = limit.clamp(1, self.batch);
        self.stopping()?;
        // Marked seen before reading, so a commit landing during the read wakes the next wait.
        self.sub.rx.borrow_and_update();
        let recent = self.relay.wakeups.recent_after(&self.addr, self.seq, limit);
        if recent.run.is_empty() && recent.last <= self.seq && self.read_at == Some(recent.notices)
        {
            return Ok(Step::Idle { read_store: false });
        }
        if !recent.run.is_empty() {
            let batch: Vec<Delivery> = recent
                .run
                .into_iter()
                .map(|(seq, message)| Delivery {
                    seq,
                    entry: cohort_core::mailbox::Entry::fresh(message.id),
                    message,
                })
                .collect();
            if let Some(last) = batch.last() {
                self.seq = last.seq;
            }
            return Ok(Step::Batch(batch));
        }
        // Taken before the read: a wakeup during it makes the next step read again.
        let notified = recent.notices;
        let (batch, last) = self
            .relay
            .peek_with_last_seq(self.addr.clone(), self.seq, limit)
            .await?;
        if let Some(d) = batch.last() {
            self.seq = d.seq;
        }
        if batch.len() < limit {
            // Nothing up to `last` waits beyond what came back.
            self.seq = self.seq.max(last);
        }
        Ok(if batch.is_empty() {
            self.read_at = Some(notified);
            Step::Idle { read_store: true }
        } else {
            Step::Batch(batch)
        })
    }

    /// Waits for the next commit to this mailbox.
    pub(crate) async fn wait(&mut self) -> Result<()> {
        tokio::select! {
            changed = self.sub.rx.changed() => changed.map_err(|_| Error::unavailable("the relay is shutting down; reconnect to resume")),
            _ = self.stop.changed() => self.stopping(),
        }
    }
}

/// The messages of one party's session mailbox, for `SubscribeMessages` and the like.
pub struct MessageFeed {
    cursor: Cursor,
    session_id: String,
}

impl MessageFeed {
    /// Checks that `who` may read `party_id`'s mailbox of `session_id` and opens the feed.
    pub async fn open(
        relay: &Arc<Relay>,
        who: Principal,
        session_id: String,
        party_id: String,
    ) -> Result<MessageFeed> {
        let addr = relay
            .session_mailbox(who, session_id.clone(), party_id)
            .await?;
        Ok(MessageFeed {
            cursor: Cursor::new(relay.clone(), addr, 0),
            session_id,
        })
    }

    /// The next batch, in seq order, marked delivered. Waits until there is one. Ends with
    /// `FailedPrecondition` (and the reason) once the session is closed and nothing is
    /// waiting, or `Unavailable` at shutdown.
    pub async fn next(&mut self) -> Result<Vec<Delivery>> {
        loop {
            match self.cursor.step(usize::MAX).await? {
                Step::Batch(batch) => {
                    let seqs: Vec<u64> = batch.iter().map(|d| d.seq).collect();
                    self.cursor.relay.mark_delivered(&self.cursor.addr, &seqs);
                    return Ok(batch);
                }
                Step::Idle { read_store: false } => self.cursor.wait().await?,
                Step::Idle { read_store: true } => {
                    if let Some(closed) = self
                        .cursor
                        .relay
                        .session_closed(self.session_id.clone())
                        .await?
                    {
                        return Err(closed);
                    }
                    self.cursor.wait().await?;
                }
            }
        }
    }
}

/// The session events of one party, for `SubscribeSessionEvents`.
///
/// Events stay until the party acknowledges them (by event id), so one lost on the way is
/// sent again on the next subscription. Those this feed's filter skips stay for a subscriber
/// that wants them; an event past its session's expiry is shown once, then dropped.
pub struct EventFeed {
    cursor: Cursor,
    filter: Vec<String>,
}

impl EventFeed {
    /// `event_types` empty: every type.
    pub fn open(
        relay: &Arc<Relay>,
        who: &Principal,
        party_id: &str,
        event_types: Vec<String>,
    ) -> Result<EventFeed> {
        cohort_core::validate::party_id("party_id", party_id)?;
        who.must_be("party_id", party_id)?;
        let max = relay.limits().max_event_types;
        if event_types.len() > max {
            return Err(Error::invalid(format!(
                "event_types lists {} types (limit {max})",
                event_types.len()
            )));
        }
        for (i, t) in event_types.iter().enumerate() {
            cohort_core::validate::label(&format!("event_types[{i}]"), t, false)?;
        }
        Ok(EventFeed {
            cursor: Cursor::new(relay.clone(), MailboxAddr::events(party_id), 0),
            filter: event_types,
        })
    }

    fn wanted(&self, e: &SessionEvent) -> bool {
        self.filter.is_empty() || self.filter.contains(&e.event_type)
    }

    /// The next events this feed shows. Waits until there is one; ends with `Unavailable`
    /// at shutdown.
    pub async fn next(&mut self) -> Result<Vec<SessionEvent>> {
        loop {
            match self.cursor.step(usize::MAX).await? {
                Step::Batch(batch) => {
                    let now = now_ms();
                    let mut shown = Vec::new();
                    let mut shown_seqs = Vec::new();
                    let mut expired = Vec::new();
                    for d in &batch {
                        // An event past its session's expiry (session_expired itself, say)
                        // is shown once more if wanted, then removed.
                        let past_expiry = d.message.expires_at < now;
                        if past_expiry {
                            expired.push(d.message.id);
                        }
                        match codec::decode::<SessionEvent>(&d.message.payload) {
                            Ok(e) if self.wanted(&e) => {
                                if !past_expiry {
                                    shown_seqs.push(d.seq);
                                }
                                shown.push(e);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(owner = %d.message.sender, error = %e, "skipping an undecodable stored event");
                            }
                        }
                    }
                    self.cursor
                        .relay
                        .settle_events(self.cursor.addr.clone(), shown_seqs, expired)
                        .await?;
                    if !shown.is_empty() {
                        return Ok(shown);
                    }
                }
                Step::Idle { .. } => self.cursor.wait().await?,
            }
        }
    }
}
