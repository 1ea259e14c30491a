//! Wakeups: after a commit, the subscribers of the mailboxes it touched are told to read.
//!
//! One `watch` channel per mailbox that has a live subscriber, carrying a version number.
//! A subscriber marks the version seen *before* it reads the store, so a commit that lands
//! between its read and its wait still wakes it.

use std::collections::HashMap;
use std::sync::Mutex;

use cohort_core::mailbox::MailboxAddr;
use tokio::sync::watch;

#[derive(Default)]
pub struct Wakeups {
    channels: Mutex<HashMap<MailboxAddr, watch::Sender<u64>>>,
}

/// A live subscription to one mailbox; dropping it lets the channel be reclaimed.
pub struct Subscription {
    pub rx: watch::Receiver<u64>,
}

impl Wakeups {
    pub fn subscribe(&self, addr: &MailboxAddr) -> Subscription {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        // Reclaim channels whose subscribers are all gone, so the map tracks live streams only.
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = map
            .entry(addr.clone())
            .or_insert_with(|| watch::channel(0).0);
        Subscription { rx: tx.subscribe() }
    }

    /// Wakes the subscribers of every address in `addrs`.
    pub fn notify(&self, addrs: &[MailboxAddr]) {
        if addrs.is_empty() {
            return;
        }
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for a in addrs {
            if let Some(tx) = map.get(a) {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }

    /// How many of `addrs` have at least one live subscriber.
    pub fn live_count(&self, addrs: &[MailboxAddr]) -> usize {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        addrs
            .iter()
            .filter(|a| map.get(*a).is_some_and(|tx| tx.receiver_count() > 0))
            .count()
    }

    /// Live subscribers in total (for metrics).
    pub fn live_subscribers(&self) -> usize {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|tx| tx.receiver_count()).sum()
    }
}
