//! Cohort's application service: [`Relay`] runs the core's rules in store transactions, wakes
//! subscribers after each commit, and owns the delivery engine every front streams from:
//! [`feed`] for the router's server streams, [`stream`] for the bidirectional mailbox stream
//! (batched sends with client ids, credit-based flow control, cumulative acks). It knows no wire format and no concrete store: the CLI composes it with a store
//! (through `cohort_core::store::Store`) and with the fronts.
#![forbid(unsafe_code)]

mod batch;
mod connections;
mod delivered;
pub mod feed;
mod metrics;
mod notify;
mod rate;
mod service;
pub mod stream;
mod wake;

pub use connections::{source, ConnectionEnd, ConnectionPermit};
pub use feed::{EventFeed, MessageFeed};
pub use notify::{LocalNotifier, Notifier};
pub use rate::Action;
pub use service::{now_ms, PartyView, Relay};
pub use stream::{MailboxStream, Pushed, SendAccepted, SendOutcome, SendRequest, Subscribe};
