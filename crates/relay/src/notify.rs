//! The notifier port: how "these mailboxes changed" travels after a commit.
//!
//! The relay always wakes its own subscribers (`wake.rs`). A notifier carries the same news to
//! other relay nodes that share the store (a cluster store), whose receiving side calls
//! [`crate::Relay::changed_elsewhere`]. A single node needs nothing more: [`LocalNotifier`].

use cohort_core::mailbox::MailboxAddr;

pub trait Notifier: Send + Sync + 'static {
    /// Called after every commit that touched mailboxes, with the mailboxes it touched.
    fn publish(&self, touched: &[MailboxAddr]);
}

/// One node: nobody else to tell.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalNotifier;

impl Notifier for LocalNotifier {
    fn publish(&self, _touched: &[MailboxAddr]) {}
}
