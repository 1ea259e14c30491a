//! Delivered, kept in memory: "pending -> delivered" is not written to the store.
//!
//! A crash forgets these marks, which turns the copies back into pending: the only effect is
//! a redelivery, which receivers drop by message id. Keeping them here takes a durable write
//! off the path of every message; GetMessageStatus overlays them on what the store says.

use std::collections::HashMap;
use std::sync::Mutex;

use cohort_core::mailbox::{DeliveryStatus, Entry, MailboxAddr};
use cohort_core::Millis;

/// When a copy was first handed out, and how many times since.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Millis,
    times: u32,
}

pub(crate) struct Delivered {
    marks: Mutex<HashMap<(MailboxAddr, u64), Mark>>,
    /// Most marks held; past it the table starts over (statuses read "pending" again,
    /// which costs nothing but accuracy of GetMessageStatus).
    cap: usize,
}

impl Delivered {
    pub(crate) fn new(cap: usize) -> Self {
        Delivered {
            marks: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(MailboxAddr, u64), Mark>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `seqs` of `addr` were handed to a stream at `now`.
    pub(crate) fn mark(&self, addr: &MailboxAddr, seqs: &[u64], now: Millis) {
        if seqs.is_empty() {
            return;
        }
        let mut marks = self.lock();
        if marks.len() + seqs.len() > self.cap {
            marks.clear();
        }
        for &seq in seqs {
            marks
                .entry((addr.clone(), seq))
                .and_modify(|m| m.times = m.times.saturating_add(1))
                .or_insert(Mark { at: now, times: 1 });
        }
    }

    /// The copy was settled (acknowledged or failed): its mark is no longer needed.
    pub(crate) fn forget(&self, addr: &MailboxAddr, seq: u64) {
        self.lock().remove(&(addr.clone(), seq));
    }

    /// `entry` as it stands with the in-memory mark applied.
    pub(crate) fn overlay(&self, addr: &MailboxAddr, seq: u64, entry: &mut Entry) {
        if entry.status != DeliveryStatus::Pending {
            return;
        }
        if let Some(m) = self.lock().get(&(addr.clone(), seq)) {
            entry.status = DeliveryStatus::Delivered;
            entry.delivered_at = m.at;
            entry.retry_count = m.times.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_overlay_pending_entries_only_and_count_redeliveries() {
        let d = Delivered::new(10);
        let a = MailboxAddr::session("bob", "s1");
        d.mark(&a, &[1, 2], 100);
        d.mark(&a, &[2], 200);
        let mut e = Entry::fresh([0; 16]);
        d.overlay(&a, 2, &mut e);
        assert_eq!(e.status, DeliveryStatus::Delivered);
        assert_eq!(e.delivered_at, 100);
        assert_eq!(e.retry_count, 1);
        let mut acked = Entry::fresh([0; 16]);
        acked.status = DeliveryStatus::Acknowledged;
        d.overlay(&a, 1, &mut acked);
        assert_eq!(acked.status, DeliveryStatus::Acknowledged);
        d.forget(&a, 1);
        let mut e = Entry::fresh([0; 16]);
        d.overlay(&a, 1, &mut e);
        assert_eq!(e.status, DeliveryStatus::Pending);
    }

    #[test]
    fn the_table_never_holds_more_than_its_cap() {
        let d = Delivered::new(3);
        let a = MailboxAddr::session("bob", "s1");
        d.mark(&a, &[1, 2, 3], 1);
        d.mark(&a, &[4], 1);
        assert!(d.len() <= 3);
    }
}
