//! Mailboxes: durable, ordered queues of opaque payloads, one per `(owner, channel)`.
//!
//! A message is stored once (`Messages`, by message id) and referenced from one entry per
//! recipient mailbox (`Mailbox`, by owner, channel, seq). `Pending` indexes the entries not yet
//! acknowledged or failed, so fetching what is waiting costs the same at any mailbox depth.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode, prefix_end, trailing_u64, Key};
use crate::error::{Error, Result};
use crate::limits::Millis;
use crate::store::{Table, Tx, View};

/// A mailbox address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxAddr {
    pub owner: String,
    pub channel: Vec<u8>,
}

impl MailboxAddr {
    pub fn new(owner: impl Into<String>, channel: impl Into<Vec<u8>>) -> Self {
        MailboxAddr {
            owner: owner.into(),
            channel: channel.into(),
        }
    }
    /// The mailbox of `party` for MPC session `session_id`.
    pub fn session(party: &str, session_id: &str) -> Self {
        Self::new(party, format!("session:{session_id}").into_bytes())
    }
    /// The mailbox where `party` receives session events.
    pub fn events(party: &str) -> Self {
        Self::new(party, b"events".to_vec())
    }
    /// Refuses an owner or channel too long for a key part rather than letting two
    /// addresses share keys.
    fn prefix(&self) -> Result<Key> {
        Key::new().part(self.owner.as_bytes())?.part(&self.channel)
    }
    fn entry_key(&self, seq: u64) -> Result<Vec<u8>> {
        Ok(self.prefix()?.u64(seq).build())
    }
}

pub type MessageId = [u8; 16];

pub fn message_id_string(id: &MessageId) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

/// A new message id: a UUIDv7, time-ordered.
pub fn new_message_id(now: Millis) -> MessageId {
    let ms = u64::try_from(now).unwrap_or(0);
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    *uuid::Uuid::new_v7(ts).as_bytes()
}

/// A message as stored once for all its recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub sender: String,
    /// Empty when the message belongs to no session.
    pub session_id: String,
    pub round: i32,
    pub message_type: String,
    pub is_broadcast: bool,
    pub payload: Bytes,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Where each recipient's entry is: (mailbox, seq).
    pub recipients: Vec<(MailboxAddr, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Acknowledged,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Acknowledged => "acknowledged",
            DeliveryStatus::Failed => "failed",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Acknowledged | DeliveryStatus::Failed)
    }
}

/// One recipient's copy of a message: where it is and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub message_id: MessageId,
    pub status: DeliveryStatus,
    pub delivered_at: Millis,
    pub acknowledged_at: Millis,
    /// Deliveries after the first (a reconnecting subscriber is sent it again).
    pub retry_count: u32,
    pub error: String,
}

impl Entry {
    /// The record of a copy just committed: pending, never delivered.
    pub fn fresh(message_id: MessageId) -> Entry {
        Entry {
            message_id,
            status: DeliveryStatus::Pending,
            delivered_at: 0,
            acknowledged_at: 0,
            retry_count: 0,
            error: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    last_seq: u64,
    pending: u64,
}

fn meta_key(addr: &MailboxAddr) -> Result<Vec<u8>> {
    Ok(addr.prefix()?.build())
}

fn get_meta(view: &dyn View, addr: &MailboxAddr) -> Result<Meta> {
    Ok(view
        .get(Table::MailboxMeta, &meta_key(addr)?)?
        .map(|b| decode(&b))
        .transpose()?
        .unwrap_or_default())
}

fn put_meta(tx: &mut dyn Tx, addr: &MailboxAddr, meta: &Meta) -> Result<()> {
    tx.put(Table::MailboxMeta, &meta_key(addr)?, &encode(meta)?)
}

/// What a send stores: everything about the message but where it lands.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub sender: String,
    pub session_id: String,
    pub round: i32,
    pub message_type: String,
    pub is_broadcast: bool,
    pub payload: Bytes,
    pub expires_at: Millis,
}

/// Appends one message to every recipient mailbox. Returns the message as stored (with the
/// seq it got in each mailbox). The caller has checked who may send to whom; this checks only
/// quotas.
pub fn append(
    tx: &mut dyn Tx,
    msg: Outgoing,
    recipients: &[MailboxAddr],
    id: MessageId,
    now: Millis,
    max_depth: u64,
) -> Result<Message> {
    let mut placed = Vec::with_capacity(recipients.len());
    for addr in recipients {
        let mut meta = get_meta(tx, addr)?;
        if meta.pending >= max_depth {
            return Err(Error::exhausted(format!(
                "mailbox of {:?} holds {} unacknowledged messages (limit {max_depth})",
                addr.owner, meta.pending
            )));
        }
        meta.last_seq += 1;
        meta.pending += 1;
        let seq = meta.last_seq;
        let entry = Entry::fresh(id);
        let key = addr.entry_key(seq)?;
        tx.put(Table::Mailbox, &key, &encode(&entry)?)?;
        tx.put(Table::Pending, &key, &[])?;
        put_meta(tx, addr, &meta)?;
        placed.push((addr.clone(), seq));
    }
    let mut stored = Message {
        id,
        sender: msg.sender,
        session_id: msg.session_id,
        round: msg.round,
        message_type: msg.message_type,
        is_broadcast: msg.is_broadcast,
        payload: Bytes::new(),
        created_at: now,
        expires_at: msg.expires_at,
        recipients: placed,
    };
    // The payload lives apart from the header, so settling a copy never reads it.
    tx.put(Table::Messages, &id, &encode(&stored)?)?;
    tx.put(Table::Payloads, &id, &msg.payload)?;
    stored.payload = msg.payload;
    Ok(stored)
}

/// The last seq a mailbox handed out (0 for an empty one).
pub fn last_seq(view: &dyn View, addr: &MailboxAddr) -> Result<u64> {
    Ok(get_meta(view, addr)?.last_seq)
}

/// A message with its payload.
pub fn get_message(view: &dyn View, id: &MessageId) -> Result<Option<Message>> {
    let Some(mut message) = get_header(view, id)? else {
        return Ok(None);
    };
    message.payload = view.get(Table::Payloads, id)?.unwrap_or_default().into();
    Ok(Some(message))
}

/// A message without its payload (`payload` is empty): who sent it, where its copies are.
pub fn get_header(view: &dyn View, id: &MessageId) -> Result<Option<Message>> {
    view.get(Table::Messages, id)?
        .map(|b| decode(&b))
        .transpose()
}

/// One waiting message as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub entry: Entry,
    /// Shared: the same message reaches every recipient's stream without a copy.
    pub message: std::sync::Arc<Message>,
}

/// The waiting (unacknowledged, not failed) messages of a mailbox with seq > `after_seq`, in
/// seq order, at most `limit`. Does not change anything.
pub fn pending(
    view: &dyn View,
    addr: &MailboxAddr,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let prefix = addr.prefix()?.build();
    let from = addr.entry_key(after_seq.saturating_add(1))?;
    let to = prefix_end(&prefix);
    let mut out = Vec::new();
    for (key, _) in view.scan(Table::Pending, &from, &to, limit)? {
        let Some(seq) = trailing_u64(&key) else {
            continue;
        };
        let Some(raw) = view.get(Table::Mailbox, &key)? else {
            continue;
        };
        let entry: Entry = decode(&raw)?;
        let Some(message) = get_message(view, &entry.message_id)? else {
            continue;
        };
        out.push(Delivery {
            seq,
            entry,
            message: std::sync::Arc::new(message),
        });
    }
    Ok(out)
}

/// The waiting messages of a mailbox created after `after` (ms), in seq order: the first
/// `limit` of them, and then any more created in the same millisecond as the last of those
/// (up to `max` in all), so a page never ends inside a millisecond and asking again after the
/// last one's `created_at` returns the rest. Payloads are read only for the messages returned.
pub fn pending_created_after(
    view: &dyn View,
    addr: &MailboxAddr,
    after: Millis,
    limit: usize,
    max: usize,
) -> Result<Vec<Delivery>> {
    const CHUNK: usize = 1024;
    let prefix = addr.prefix()?.build();
    let to = prefix_end(&prefix);
    let mut from = addr.entry_key(1)?;
    let mut out: Vec<Delivery> = Vec::new();
    loop {
        let keys = view.scan(Table::Pending, &from, &to, CHUNK)?;
        let Some((last, _)) = keys.last() else {
            return Ok(out);
        };
        from = last.clone();
        from.push(0);
        for (key, _) in &keys {
            let Some(seq) = trailing_u64(key) else {
                continue;
            };
            let Some(raw) = view.get(Table::Mailbox, key)? else {
                continue;
            };
            let entry: Entry = decode(&raw)?;
            let Some(mut message) = get_header(view, &entry.message_id)? else {
                continue;
            };
            if message.created_at <= after {
                continue;
            }
            if out.len() >= limit {
                let same_ms = out
                    .last()
                    .is_some_and(|d| d.message.created_at == message.created_at);
                if !same_ms || out.len() >= max {
                    return Ok(out);
                }
            }
            message.payload = view
                .get(Table::Payloads, &entry.message_id)?
                .unwrap_or_default()
                .into();
            out.push(Delivery {
                seq,
                entry,
                message: std::sync::Arc::new(message),
            });
        }
        if keys.len() < CHUNK {
            return Ok(out);
        }
    }
}

/// Number of waiting messages in a mailbox.
pub fn pending_count(view: &dyn View, addr: &MailboxAddr) -> Result<u64> {
    Ok(get_meta(view, addr)?.pending)
}

/// Number of waiting messages across every mailbox of `owner`.
pub fn pending_count_for_owner(view: &dyn View, owner: &str) -> Result<u64> {
    let prefix = Key::new().part(owner.as_bytes())?.build();
    let to = prefix_end(&prefix);
    let mut total = 0;
    for (_, raw) in view.scan(Table::MailboxMeta, &prefix, &to, 100_000)? {
        let m: Meta = decode(&raw)?;
        total += m.pending;
    }
    Ok(total)
}

/// Records that entries were handed to their reader. A second hand-over counts as a retry.
pub fn mark_delivered(
    tx: &mut dyn Tx,
    addr: &MailboxAddr,
    seqs: &[u64],
    now: Millis,
) -> Result<()> {
    for &seq in seqs {
        let key = addr.entry_key(seq)?;
        let Some(raw) = tx.get(Table::Mailbox, &key)? else {
            continue;
        };
        let mut entry: Entry = decode(&raw)?;
        match entry.status {
            DeliveryStatus::Pending => {
                entry.status = DeliveryStatus::Delivered;
                entry.delivered_at = now;
            }
            DeliveryStatus::Delivered => entry.retry_count = entry.retry_count.saturating_add(1),
            DeliveryStatus::Acknowledged | DeliveryStatus::Failed => continue,
        }
        tx.put(Table::Mailbox, &key, &encode(&entry)?)?;
    }
    Ok(())
}

/// Settles one entry: acknowledged (`ok`) or failed with `error`. Settling twice is a no-op
/// that reports the status already reached.
pub fn settle(
    tx: &mut dyn Tx,
    addr: &MailboxAddr,
    seq: u64,
    ok: bool,
    error: &str,
    now: Millis,
) -> Result<DeliveryStatus> {
    let (status, newly) = settle_entry(tx, addr, seq, ok, error, now)?;
    if newly {
        release(tx, addr, 1)?;
    }
    Ok(status)
}

/// [`settle`] without the mailbox's pending count: returns the status and whether this call
/// settled the entry (so the caller owes the mailbox one [`release`]). Lets a batch of acks
/// update each mailbox's counter once. Refuses before it writes anything.
pub fn settle_entry(
    tx: &mut dyn Tx,
    addr: &MailboxAddr,
    seq: u64,
    ok: bool,
    error: &str,
    now: Millis,
) -> Result<(DeliveryStatus, bool)> {
    let key = addr.entry_key(seq)?;
    let Some(raw) = tx.get(Table::Mailbox, &key)? else {
        return Err(Error::not_found(format!(
            "no message with seq {seq} in this mailbox"
        )));
    };
    let mut entry: Entry = decode(&raw)?;
    if entry.status.is_final() {
        return Ok((entry.status, false));
    }
    if entry.delivered_at == 0 {
        entry.delivered_at = now;
    }
    if ok {
        entry.status = DeliveryStatus::Acknowledged;
        entry.acknowledged_at = now;
    } else {
        entry.status = DeliveryStatus::Failed;
        entry.error = error.to_string();
    }
    tx.put(Table::Mailbox, &key, &encode(&entry)?)?;
    tx.delete(Table::Pending, &key)?;
    Ok((entry.status, true))
}

/// Takes `settled` entries off a mailbox's pending count.
pub fn release(tx: &mut dyn Tx, addr: &MailboxAddr, settled: u64) -> Result<()> {
    if settled == 0 {
        return Ok(());
    }
    let mut meta = get_meta(tx, addr)?;
    meta.pending = meta.pending.saturating_sub(settled);
    put_meta(tx, addr, &meta)
}

/// Acknowledges every waiting entry with seq <= `seq_up_to`. Returns how many it settled.
pub fn ack_up_to(
    tx: &mut dyn Tx,
    addr: &MailboxAddr,
    seq_up_to: u64,
    now: Millis,
) -> Result<usize> {
    let from = addr.entry_key(0)?;
    let to = addr.entry_key(seq_up_to.saturating_add(1))?;
    let keys = tx.scan(Table::Pending, &from, &to, usize::MAX)?;
    for (key, _) in &keys {
        if let Some(seq) = trailing_u64(key) {
            settle(tx, addr, seq, true, "", now)?;
        }
    }
    Ok(keys.len())
}

/// Fails every waiting entry of a mailbox (its session closed). Returns how many.
pub fn fail_pending(
    tx: &mut dyn Tx,
    addr: &MailboxAddr,
    reason: &str,
    now: Millis,
) -> Result<usize> {
    let prefix = addr.prefix()?.build();
    let to = prefix_end(&prefix);
    let keys = tx.scan(Table::Pending, &prefix, &to, usize::MAX)?;
    for (key, _) in &keys {
        if let Some(seq) = trailing_u64(key) {
            settle(tx, addr, seq, false, reason, now)?;
        }
    }
    Ok(keys.len())
}

/// Removes a mailbox's entries, its meta and the messages only it referenced.
pub fn purge(tx: &mut dyn Tx, addr: &MailboxAddr) -> Result<()> {
    let prefix = addr.prefix()?.build();
    let to = prefix_end(&prefix);
    for (key, raw) in tx.scan(Table::Mailbox, &prefix, &to, usize::MAX)? {
        let entry: Entry = decode(&raw)?;
        tx.delete(Table::Messages, &entry.message_id)?;
        tx.delete(Table::Payloads, &entry.message_id)?;
        tx.delete(Table::Mailbox, &key)?;
        tx.delete(Table::Pending, &key)?;
    }
    tx.delete(Table::MailboxMeta, &meta_key(addr)?)
}

/// Removes one message and all its entries (used for consumed events).
pub fn remove_message(tx: &mut dyn Tx, id: &MessageId) -> Result<()> {
    let Some(message) = get_header(tx, id)? else {
        return Ok(());
    };
    for (addr, seq) in &message.recipients {
        let key = addr.entry_key(*seq)?;
        if tx.get(Table::Pending, &key)?.is_some() {
            tx.delete(Table::Pending, &key)?;
            let mut meta = get_meta(tx, addr)?;
            meta.pending = meta.pending.saturating_sub(1);
            put_meta(tx, addr, &meta)?;
        }
        tx.delete(Table::Mailbox, &key)?;
    }
    tx.delete(Table::Payloads, id)?;
    tx.delete(Table::Messages, id)
}

/// The delivery record of one recipient's copy.
pub fn entry(view: &dyn View, addr: &MailboxAddr, seq: u64) -> Result<Option<Entry>> {
    view.get(Table::Mailbox, &addr.entry_key(seq)?)?
        .map(|b| decode(&b))
        .transpose()
}
