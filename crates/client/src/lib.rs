//! Cohort's Rust SDK: a party's side of a Cohort relay, over the relay's gRPC API only
//! (`mpc.router.v1.MessageRouter` and the `cohort.v1` services). Messages are sent, received
//! and acknowledged over one `cohort.v1.Mailbox` stream per [`Client`], shared by all its
//! sessions: sends are batched and carry client ids (a send retried after a dropped
//! connection or a relay restart gets the original message id), deliveries come under credit
//! (an Inbox nobody reads holds at most a window of messages), and acks are cumulative when
//! the reader acknowledges in order.
//!
//! - [`Client`]: connect and log in (challenge signed by the party's Ed25519 identity key),
//!   enroll parties (coordinators), register, heartbeat, publish and fetch encryption keys
//!   (signatures verified), create, join and report on sessions.
//! - [`SessionEvents`]: session lifecycle events, reconnecting when the stream drops.
//! - [`Inbox`]: a session's mailbox, resumed after a dropped connection or a relay restart
//!   from the last seq acknowledged, with redeliveries dropped by message id; the consumer
//!   acknowledges what it processed.
//! - [`SecureSession`]: the end-to-end layer: payloads signed by the sender, point-to-point
//!   payloads sealed to the recipient (HPKE), and refusals that name the culprit.
//!
//! Every error is a [`ClientError`] that names the relay URL and, for relay errors, the
//! call and its gRPC status code and message.
#![forbid(unsafe_code)]

mod backoff;
mod client;
mod directory;
mod enrollment;
mod error;
mod events;
mod inbox;
mod link;
mod resume;
mod secure;
mod seen;
mod sessions;

pub use client::{Client, ClientOptions};
pub use directory::{Heartbeat, PeerKeys};
pub use error::{code_name, ClientError, RejectReason, Rejected};
pub use events::{event_type, SessionEvent, SessionEvents};
pub use inbox::{Inbox, Received};
pub use secure::{Opened, SecureSession};
pub use sessions::{CreateSession, Created, JoinInfo};

/// Wire types that appear in this API.
pub use cohort_wire::cohort::{Enrollment, Participant, SessionSummary};
pub use cohort_wire::router::{
    DelegateUserShare, GetMessageStatusResponse, MessageDeliveryStatus, NotificationChannel,
    RegisteredParty,
};
