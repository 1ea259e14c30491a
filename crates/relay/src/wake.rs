//! Wakeups: after a commit, the subscribers of the mailboxes it touched are told to read.
//!
//! One `watch` channel per mailbox that has a live subscriber, carrying a version number.
//! A subscriber marks the version seen *before* it reads the store, so a commit that lands
//! between its read and its wait still wakes it.
//!
//! Routed messages are also handed over in memory: each subscribed mailbox keeps the few
//! messages committed to it most recently, by seq, so a live subscriber that is caught up
//! pushes them without reading them back from the store. The store stays the truth: a
//! subscriber that finds a gap (a seq it has not seen, missing here) reads the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cohort_core::mailbox::{MailboxAddr, Message};
use tokio::sync::watch;

struct Slot {
    tx: watch::Sender<u64>,
    recent: BTreeMap<u64, Arc<Message>>,
    recent_bytes: usize,
    /// The highest seq handed over in memory since the slot was made.
    last: u64,
    /// Wakeups without a message in memory (a session closed, an event, another node's
    /// commit): a reader must look at the store.
    notices: u64,
}

impl Slot {
    fn keep(&mut self, seq: u64, message: Arc<Message>, max: (usize, usize)) {
        self.recent_bytes += message.payload.len();
        self.recent.insert(seq, message);
        while self.recent.len() > max.0 || self.recent_bytes > max.1 {
            match self.recent.pop_first() {
                Some((_, m)) => self.recent_bytes -= m.payload.len(),
                None => break,
            }
        }
    }
}

pub(crate) struct Wakeups {
    channels: Mutex<HashMap<MailboxAddr, Slot>>,
    /// Most messages, and payload bytes, kept in memory per subscribed mailbox.
    recent_max: (usize, usize),
}

/// What [`Wakeups::recent_after`] finds in memory.
#[derive(Default)]
pub(crate) struct Recent {
    /// Consecutive messages after the seq asked for.
    pub(crate) run: Vec<(u64, Arc<Message>)>,
    /// The highest seq handed over in memory (0: none, or no subscriber).
    pub(crate) last: u64,
    /// Wakeups without a message so far.
    pub(crate) notices: u64,
}

/// A live subscription to one mailbox; dropping it lets the channel be reclaimed.
pub(crate) struct Subscription {
    pub(crate) rx: watch::Receiver<u64>,
}

impl Wakeups {
    pub(crate) fn new(recent_messages: usize, recent_bytes: usize) -> Self {
        Wakeups {
            channels: Mutex::new(HashMap::new()),
            recent_max: (recent_messages, recent_bytes),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MailboxAddr, Slot>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe(&self, addr: &MailboxAddr) -> Subscription {
        let mut map = self.lock();
        // Reclaim channels whose subscribers are all gone, so the map tracks live streams only.
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, slot| slot.tx.receiver_count() > 0);
        }
        let slot = map.entry(addr.clone()).or_insert_with(|| Slot {
            tx: watch::channel(0).0,
            recent: BTreeMap::new(),
            recent_bytes: 0,
            last: 0,
            notices: 0,
        });
        Subscription {
            rx: slot.tx.subscribe(),
        }
    }

    /// Wakes the subscribers of every address in `addrs`.
    pub(crate) fn notify(&self, addrs: &[MailboxAddr]) {
        if addrs.is_empty() {
            return;
        }
        let mut map = self.lock();
        for a in addrs {
            if let Some(slot) = map.get_mut(a) {
                slot.notices = slot.notices.wrapping_add(1);
                slot.tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }

    /// Hands a just-committed message to the subscribers of its recipients, and wakes them.
    pub(crate) fn deliver(&self, message: &Arc<Message>) {
        let mut map = self.lock();
        for (addr, seq) in &message.recipients {
            if let Some(slot) = map.get_mut(addr) {
                slot.last = slot.last.max(*seq);
                if slot.tx.receiver_count() > 0 {
                    slot.keep(*seq, message.clone(), self.recent_max);
                }
                slot.tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }

    /// The messages of `addr` with seqs `after + 1, after + 2, ...` held in memory, stopping
    /// at the first gap, at most `limit`, forgetting those at or below `after`; with what a
    /// reader needs to know whether memory holds all there is: the highest seq handed over
    /// and the count of wakeups without a message.
    pub(crate) fn recent_after(&self, addr: &MailboxAddr, after: u64, limit: usize) -> Recent {
        let mut map = self.lock();
        let Some(slot) = map.get_mut(addr) else {
            return Recent::default();
        };
        while let Some(entry) = slot.recent.first_entry() {
            if *entry.key() > after {
                break;
            }
            let m = entry.remove();
            slot.recent_bytes -= m.payload.len();
        }
        let mut run = Vec::new();
        let mut next = after + 1;
        while run.len() < limit {
            match slot.recent.get(&next) {
                Some(m) => run.push((next, m.clone())),
                None => break,
            }
            next += 1;
        }
        Recent {
            run,
            last: slot.last,
            notices: slot.notices,
        }
    }

    /// How many of `addrs` have at least one live subscriber.
    pub(crate) fn live_count(&self, addrs: &[MailboxAddr]) -> usize {
        let map = self.lock();
        addrs
            .iter()
            .filter(|a| map.get(*a).is_some_and(|s| s.tx.receiver_count() > 0))
            .count()
    }

    /// Live subscribers in total (for metrics).
    pub(crate) fn live_subscribers(&self) -> usize {
        let map = self.lock();
        map.values().map(|s| s.tx.receiver_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seqs: &[(MailboxAddr, u64)]) -> Arc<Message> {
        Arc::new(Message {
            id: [0; 16],
            sender: "a".into(),
            session_id: String::new(),
            round: 0,
            message_type: String::new(),
            is_broadcast: false,
            payload: vec![1; 10].into(),
            created_at: 0,
            expires_at: 0,
            recipients: seqs.to_vec(),
        })
    }

    #[test]
    fn recent_run_stops_at_the_first_gap_and_forgets_what_was_passed() {
        let w = Wakeups::new(512, 1 << 20);
        let addr = MailboxAddr::new("b", b"c".to_vec());
        let _sub = w.subscribe(&addr);
        for seq in [3, 1, 2, 5] {
            w.deliver(&msg(&[(addr.clone(), seq)]));
        }
        let run: Vec<u64> = w
            .recent_after(&addr, 0, 10)
            .run
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(run, vec![1, 2, 3], "4 is missing, so 5 waits for the store");
        let run: Vec<u64> = w
            .recent_after(&addr, 4, 10)
            .run
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(run, vec![5]);
        assert!(w.recent_after(&addr, 5, 10).run.is_empty());
    }

    #[test]
    fn recent_after_reports_the_last_seq_and_the_wakeups_without_a_message() {
        let w = Wakeups::new(512, 1 << 20);
        let addr = MailboxAddr::new("b", b"c".to_vec());
        let _sub = w.subscribe(&addr);
        w.deliver(&msg(&[(addr.clone(), 1)]));
        w.deliver(&msg(&[(addr.clone(), 3)]));
        let r = w.recent_after(&addr, 0, 10);
        assert_eq!((r.run.len(), r.last, r.notices), (1, 3, 0));
        w.notify(std::slice::from_ref(&addr));
        let r = w.recent_after(&addr, 3, 10);
        assert_eq!((r.run.len(), r.last, r.notices), (0, 3, 1));
    }

    #[test]
    fn mailboxes_without_subscribers_keep_nothing() {
        let w = Wakeups::new(512, 1 << 20);
        let addr = MailboxAddr::new("b", b"c".to_vec());
        w.deliver(&msg(&[(addr.clone(), 1)]));
        let _sub = w.subscribe(&addr);
        assert!(w.recent_after(&addr, 0, 10).run.is_empty());
    }
}
