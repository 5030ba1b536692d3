//! The community relay's mailbox part: store-and-forward of envelopes for offline recipients.
//!
//! A community relay keeps, for anyone, envelopes addressed to mailbox ids it cannot link to
//! people: anyone may deposit into a mailbox, only its owner may fetch from it or delete from it,
//! with a fetch token signed by the mailbox's key for this relay (the mailbox id is a hash of
//! that key). Each deposit is
//! answered only once it is durable on disk, with an id from one relay-wide increasing counter,
//! so one `after` cursor pages through all of a recipient's mailboxes at once.
//!
//! * [`mailboxes`]: the sled store (TTL, group-committed flushes).
//! * [`blobs`]: the file store: encrypted chunks of files, in the same database (protocol §14).
//! * [`blob_service`]: answers `/merpati/blob/1` requests from [`Blobs`].
//! * [`usage`]: what is stored per mailbox, per depositor and in all, and the quotas on it.
//! * [`marks`]: when each mailbox was last fetched, which decides its TTL and its access to the
//!   reserve kept for live mailboxes.
//! * [`depositor`]: who a request comes from: the network (IPv4 address, IPv6 /64) and the peer.
//! * [`rate`]: token buckets per peer and per network.
//! * [`tokens`]: checks fetch tokens, with a bounded cache of those already verified.
//! * [`service`]: answers `/merpati/mailbox/2` requests, including long-poll fetches, with no
//!   network of its own: the network layer passes in requests and sends the responses.
//! * [`metrics`]: Prometheus metrics and a minimal `GET /metrics` endpoint.
//! * [`process`]: the build and the process's memory and file descriptors, as metrics.
//! * `purge`: the periodic purge of what expired, which the mailboxes and the file store share.
//! * [`run`]: the relay daemon: node key, mailboxes, the network in the relay role, metrics.
//!
//! The wire types are `merpati_proto::wire::mailbox`; the relay never sees more of an envelope
//! than its clear header, which it checks names the mailbox the envelope is deposited into.

pub mod blob_service;
pub mod blobs;
pub mod depositor;
pub mod mailboxes;
mod marks;
pub mod metrics;
pub mod process;
mod purge;
pub mod rate;
pub mod run;
pub mod service;
pub mod tokens;
mod usage;

pub use blob_service::BlobService;
pub use blobs::{BlobLimits, BlobStats, Blobs};
pub use depositor::Depositor;
pub use mailboxes::{
    DEFAULT_TTL_DAYS, DEFAULT_UNFETCHED_TTL_DAYS, MailboxError, MailboxLimits, MailboxStats, Mailboxes,
};
pub use metrics::{MailboxMetrics, serve as serve_metrics};
pub use rate::{Rate, RateLimiter, RateLimits};
pub use service::MailboxService;
