//! A bounded memory of ids already handed to the reader, to drop redeliveries.

use std::collections::{HashMap, VecDeque};

/// What became of an id handed to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Yielded; the reader has not acknowledged it yet.
    Yielded,
    /// The reader acknowledged it.
    Acked,
    /// The reader refused it (settled as failed).
    Rejected,
}

/// The last `capacity` ids, oldest forgotten first. A forgotten id that comes back is
/// yielded again, which receivers tolerate (delivery is at least once).
#[derive(Debug)]
pub(crate) struct Seen {
    fates: HashMap<String, Fate>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    pub(crate) fn new(capacity: usize) -> Self {
        Seen {
            fates: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn fate(&self, id: &str) -> Option<Fate> {
        self.fates.get(id).copied()
    }

    /// Records `id` with `fate`, forgetting the oldest id when full.
    pub(crate) fn record(&mut self, id: &str, fate: Fate) {
        if let Some(f) = self.fates.get_mut(id) {
            *f = fate;
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.fates.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.fates.insert(id.to_string(), fate);
    }

    /// Records `id` as yielded if it is new; returns whether it was.
    pub(crate) fn insert_new(&mut self, id: &str) -> bool {
        if self.fates.contains_key(id) {
            return false;
        }
        self.record(id, Fate::Yielded);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_most_capacity_ids_and_forgets_the_oldest() {
        let mut s = Seen::new(2);
        assert!(s.insert_new("a"));
        assert!(!s.insert_new("a"));
        assert!(s.insert_new("b"));
        s.record("b", Fate::Acked);
        assert!(s.insert_new("c"));
        assert_eq!(s.fate("a"), None, "oldest forgotten");
        assert_eq!(s.fate("b"), Some(Fate::Acked));
        assert_eq!(s.fate("c"), Some(Fate::Yielded));
        assert_eq!(s.fates.len(), 2);
        assert_eq!(s.order.len(), 2);
    }
}
