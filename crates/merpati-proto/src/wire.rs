//! Requests and responses of the node's two request-response protocols, as serde types (the node
//! encodes them with CBOR; every byte field is a CBOR byte string through `serde_bytes`).
//!
//! * [`DELIVER_PROTOCOL`]: a peer hands an envelope straight to the recipient's node.
//!   `deliver::Request` → `deliver::Response::Accepted` only once the recipient has processed and
//!   durably stored it (the transport-level ack; the end-to-end receipt is a separate encrypted
//!   message), or `Refused`.
//! * [`DELIVER_BATCH_PROTOCOL`]: the same for up to [`MAX_BATCH_ENVELOPES`] envelopes of one
//!   conversation at once, processed in order with one durable write; `deliver::Batch` →
//!   `deliver::BatchResponse`, one answer per envelope. A backlog drains in few round trips, and
//!   in the order it was written.
//! * [`MAILBOX_PROTOCOL`]: a recipient's relay keeps envelopes for it.
//!   `Deposit` → `Stored { id }` once flushed to disk; `Fetch` (with fetch tokens, a cursor and an
//!   optional long-poll wait) → `Envelopes { items, more }`; `Delete` → `Deleted { count }`. Any
//!   request may be answered `Refused(Refusal)`, a typed reason the sender can show.
//! * [`blob::BLOB_PROTOCOL`]: a relay keeps the encrypted chunks of files (see [`blob`]).
//!
//! Relays number stored envelopes with one increasing `u64` counter per relay, so a single `after`
//! cursor pages through several mailboxes at once and items come back in increasing id order.
//!
//! Both sides call `validate` on everything they receive before acting on it: a server answers a
//! bad request with [`WireError::refusal`], a client drops a bad response. The codec's own size
//! limits ([`MAX_REQUEST_LEN`], [`MAX_RESPONSE_LEN`]) stop oversized messages before they are
//! parsed at all.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::envelope::MAX_ENVELOPE_LEN;

/// Protocol name of direct delivery.
pub const DELIVER_PROTOCOL: &str = "/merpati/deliver/1";
/// Protocol name of batched direct delivery.
pub const DELIVER_BATCH_PROTOCOL: &str = "/merpati/deliver/2";
/// The most envelopes in one batch.
pub const MAX_BATCH_ENVELOPES: usize = 64;
/// The most envelope bytes in one batch (64 texts of the 2 KiB bucket fit twice over; so do four
/// of the largest envelopes).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The largest encoded batch: [`MAX_BATCH_BYTES`] and the framing of [`MAX_BATCH_ENVELOPES`]
/// envelopes, with room to spare.
pub const MAX_BATCH_REQUEST_LEN: usize = MAX_BATCH_BYTES + 16 * 1024;
/// Protocol name of the relay mailbox service.
pub const MAILBOX_PROTOCOL: &str = "/merpati/mailbox/2";
/// The largest encoded request: one envelope (64 KiB) and its framing, or a fetch or delete with
/// its maximum token or id list, with room to spare.
pub const MAX_REQUEST_LEN: usize = 128 * 1024;
/// The most envelope bytes in one page of a fetch. A relay stops adding items once the next one
/// would pass this, so one page costs both sides at most about 1 MiB of memory; `more` says
/// whether to fetch again.
pub const MAX_FETCH_PAGE_BYTES: usize = 1024 * 1024;
/// The largest encoded response: a full fetch page plus the per-item framing of
/// [`MAX_FETCH_LIMIT`] items (field names, mailbox id, id; well under 1 KiB each).
pub const MAX_RESPONSE_LEN: usize = MAX_FETCH_PAGE_BYTES + 64 * 1024;
/// The most envelopes one fetch may ask for: a page of 1 KiB envelopes fits well within
/// [`MAX_FETCH_PAGE_BYTES`], so an owner coming back online takes a backlog in few round trips.
pub const MAX_FETCH_LIMIT: u32 = 256;
/// The most fetch tokens (mailboxes) one fetch may name. A node watches about four mailboxes per
/// conversation (yesterday, today, tomorrow and the last announced one), so one long poll covers
/// some sixty conversations; nodes with more split their fetches.
pub const MAX_FETCH_TOKENS: usize = 256;
/// The longest a fetch may ask the relay to wait for new deposits, in milliseconds: two minutes,
/// so an idle node renews its long poll about 30 times an hour. Below the node's request
/// timeout, so a long poll ends with an answer, not a timeout.
pub const MAX_FETCH_WAIT_MS: u32 = 120_000;
/// The most envelope ids one delete may name.
pub const MAX_DELETE_IDS: usize = 256;

/// Why a node or relay refused a request. Sent on the wire, and shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// The mailbox has reached its quota (count or bytes).
    MailboxFull,
    /// The envelope or request is larger than the receiver accepts.
    TooLarge {
        /// The largest size accepted, in bytes.
        max: u32,
    },
    /// Too many requests from this peer.
    RateLimited {
        /// How long to wait before trying again, in milliseconds.
        retry_after_ms: u32,
    },
    /// A fetch token was not made for this relay by its mailbox's key, or the peer may not use
    /// this service.
    Unauthorized,
    /// The relay has no room for more mailboxes or envelopes.
    RelayFull,
    /// The request breaks the protocol's rules.
    Malformed,
    /// The relay keeps no such mailbox (or the node no such conversation).
    UnknownMailbox,
    /// The receiver failed on its side (storage error); trying again later may work.
    Internal,
    /// The relay keeps files only for nodes that hold a reservation there (listen through it).
    NotReserved,
    /// The relay keeps no such file (never created, withdrawn, expired, or every reader has it).
    UnknownBlob,
    /// The envelope belongs to a conversation another copy of the sender's identity also writes
    /// in (a copied home folder, or a device still running after its identity was restored from
    /// a backup elsewhere): the two copies' envelopes conflict, and this one was not taken.
    SessionConflict,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MailboxFull => f.write_str("the recipient's mailbox is full"),
            Self::TooLarge { max } => write!(f, "the message is too large (the limit is {max} bytes)"),
            Self::RateLimited { retry_after_ms } => {
                write!(f, "too many requests; try again in {} s", retry_after_ms.div_ceil(1000))
            }
            Self::Unauthorized => f.write_str("not authorized"),
            Self::RelayFull => f.write_str("the relay is full"),
            Self::Malformed => f.write_str("the request was malformed"),
            Self::UnknownMailbox => f.write_str("no such mailbox"),
            Self::Internal => f.write_str("the other side had an internal error"),
            Self::NotReserved => f.write_str("the relay keeps files only for nodes that listen through it"),
            Self::UnknownBlob => f.write_str("the relay has no such file (it expired or was withdrawn)"),
            Self::SessionConflict => f.write_str(
                "another copy of your identity writes in this conversation (a copied home folder, or this device kept running after a restore from a backup elsewhere); stop every copy but one",
            ),
        }
    }
}

/// Why a request or response breaks the protocol's limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A byte field is longer than its limit.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list or count is outside its allowed range.
    #[error("{what} has {count} items, outside 1..={max}")]
    Count {
        /// The list.
        what: &'static str,
        /// How many items it has.
        count: usize,
        /// The most it may have.
        max: usize,
    },
    /// A field holds a value the protocol forbids.
    #[error("invalid {what}")]
    Invalid {
        /// The rule that was broken.
        what: &'static str,
    },
    /// The response does not answer the request it came for.
    #[error("response does not answer the request: {what}")]
    Mismatch {
        /// What does not match.
        what: &'static str,
    },
}

impl WireError {
    /// The refusal a server answers a request that fails validation with.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::TooLarge { max, .. } => Refusal::TooLarge { max: u32::try_from(*max).unwrap_or(u32::MAX) },
            Self::Count { .. } | Self::Invalid { .. } | Self::Mismatch { .. } => Refusal::Malformed,
        }
    }
}

fn check_envelope(envelope: &[u8]) -> Result<(), WireError> {
    if envelope.is_empty() {
        return Err(WireError::Invalid { what: "empty envelope" });
    }
    if envelope.len() > MAX_ENVELOPE_LEN {
        return Err(WireError::TooLarge { what: "envelope", len: envelope.len(), max: MAX_ENVELOPE_LEN });
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count == 0 || count > max { Err(WireError::Count { what, count, max }) } else { Ok(()) }
}

/// `/merpati/deliver/1`: direct delivery to the recipient's node.
pub mod deliver {
    use serde::{Deserialize, Serialize};

    use super::{MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES, Refusal, WireError, check_count, check_envelope};

    /// One envelope for the receiving node.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Request {
        /// The encoded envelope.
        #[serde(with = "serde_bytes")]
        pub envelope: Vec<u8>,
    }

    impl Request {
        /// Checks the envelope is non-empty and at most `MAX_ENVELOPE_LEN` bytes.
        pub fn validate(&self) -> Result<(), WireError> {
            check_envelope(&self.envelope)
        }
    }

    /// The receiving node's answer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Response {
        /// Processed and durably stored; the sender may forget the envelope.
        Accepted,
        /// Not accepted, and why.
        Refused(Refusal),
    }

    /// Envelopes for the receiving node, to be processed in this order (`/merpati/deliver/2`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Batch {
        /// The encoded envelopes, 1 to `MAX_BATCH_ENVELOPES`, `MAX_BATCH_BYTES` together.
        pub envelopes: Vec<serde_bytes::ByteBuf>,
    }

    impl Batch {
        /// Checks the count, each envelope as [`Request::validate`] does, and the total size.
        pub fn validate(&self) -> Result<(), WireError> {
            check_count("batch envelopes", self.envelopes.len(), MAX_BATCH_ENVELOPES)?;
            let mut total = 0usize;
            for envelope in &self.envelopes {
                check_envelope(envelope)?;
                total = total.saturating_add(envelope.len());
            }
            if total > MAX_BATCH_BYTES {
                return Err(WireError::TooLarge { what: "batch", len: total, max: MAX_BATCH_BYTES });
            }
            Ok(())
        }
    }

    /// The receiving node's answers to a [`Batch`]: one per envelope, in the batch's order.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BatchResponse {
        /// The answers.
        pub results: Vec<Response>,
    }

    impl BatchResponse {
        /// The same answer for every envelope of `batch` (a refusal of the whole request).
        pub fn all(batch: &Batch, response: Response) -> Self {
            Self { results: vec![response; batch.envelopes.len()] }
        }

        /// Checks that the response answers `batch`: exactly one answer per envelope.
        pub fn validate_for(&self, batch: &Batch) -> Result<(), WireError> {
            if self.results.len() != batch.envelopes.len() {
                return Err(WireError::Mismatch { what: "one answer per envelope" });
            }
            Ok(())
        }
    }
}

pub mod blob;

/// `/merpati/mailbox/2`: store-and-forward at a relay.
pub mod mailbox {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Serialize};

    use super::{
        MAX_DELETE_IDS, MAX_FETCH_LIMIT, MAX_FETCH_PAGE_BYTES, MAX_FETCH_TOKENS, MAX_FETCH_WAIT_MS, Refusal,
        WireError, check_count, check_envelope,
    };
    use crate::mailbox::{FetchToken, MailboxId};

    /// A request to a relay's mailbox service.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub enum Request {
        /// Store an envelope in a mailbox. Anyone may deposit; only the owner may fetch.
        Deposit {
            /// The mailbox (the envelope's header names the same one).
            mailbox: MailboxId,
            /// The encoded envelope.
            #[serde(with = "serde_bytes")]
            envelope: Vec<u8>,
        },
        /// Fetch envelopes of the mailboxes the tokens open, with ids above `after`.
        Fetch {
            /// One token per mailbox, 1 to `MAX_FETCH_TOKENS`.
            tokens: Vec<FetchToken>,
            /// Only envelopes with a larger id; `None` from the beginning.
            after: Option<u64>,
            /// The most envelopes to return, 1 to `MAX_FETCH_LIMIT`.
            limit: u32,
            /// Long poll: if nothing is waiting, how long the relay may hold the request until
            /// something is deposited, in milliseconds (0 = answer at once; at most
            /// `MAX_FETCH_WAIT_MS`).
            wait_ms: u32,
        },
        /// Delete envelopes (typically after storing them) from the mailbox the token opens.
        Delete {
            /// The token of the mailbox.
            token: FetchToken,
            /// The envelope ids, 1 to `MAX_DELETE_IDS`.
            ids: Vec<u64>,
        },
    }

    impl Request {
        /// Checks every bound; a server answers a failure with [`WireError::refusal`].
        pub fn validate(&self) -> Result<(), WireError> {
            match self {
                Self::Deposit { envelope, .. } => check_envelope(envelope),
                Self::Fetch { tokens, limit, wait_ms, .. } => {
                    check_count("fetch tokens", tokens.len(), MAX_FETCH_TOKENS)?;
                    check_count(
                        "fetch limit",
                        usize::try_from(*limit).unwrap_or(usize::MAX),
                        MAX_FETCH_LIMIT as usize,
                    )?;
                    if *wait_ms > MAX_FETCH_WAIT_MS {
                        return Err(WireError::Invalid { what: "fetch wait over the limit" });
                    }
                    Ok(())
                }
                Self::Delete { ids, .. } => check_count("delete ids", ids.len(), MAX_DELETE_IDS),
            }
        }
    }

    /// One stored envelope, as a fetch returns it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StoredEnvelope {
        /// The mailbox it was deposited in.
        pub mailbox: MailboxId,
        /// The relay's id for it: increasing across the relay, used as the fetch cursor and
        /// to delete it.
        pub id: u64,
        /// The encoded envelope.
        #[serde(with = "serde_bytes")]
        pub envelope: Vec<u8>,
    }

    /// A relay's answer.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub enum Response {
        /// The deposit is durably stored under `id`.
        Stored {
            /// The relay's id for the envelope.
            id: u64,
        },
        /// A page of envelopes, in increasing id order.
        Envelopes {
            /// The envelopes, at most the request's limit and `MAX_FETCH_PAGE_BYTES` in total.
            items: Vec<StoredEnvelope>,
            /// Whether more envelopes are waiting after the last one.
            more: bool,
        },
        /// How many of the named envelopes were deleted (ids that were already gone are not
        /// counted, so a repeated delete is harmless).
        Deleted {
            /// The number deleted.
            count: u32,
        },
        /// The request was refused.
        Refused(Refusal),
    }

    impl Response {
        /// Checks the bounds a response must keep whatever it answers.
        pub fn validate(&self) -> Result<(), WireError> {
            match self {
                Self::Stored { .. } | Self::Refused(_) => Ok(()),
                Self::Envelopes { items, .. } => {
                    if items.len() > MAX_FETCH_LIMIT as usize {
                        return Err(WireError::Count {
                            what: "fetched envelopes",
                            count: items.len(),
                            max: MAX_FETCH_LIMIT as usize,
                        });
                    }
                    let mut total = 0usize;
                    for item in items {
                        check_envelope(&item.envelope)?;
                        total = total.saturating_add(item.envelope.len());
                    }
                    if total > MAX_FETCH_PAGE_BYTES {
                        return Err(WireError::TooLarge {
                            what: "fetch page",
                            len: total,
                            max: MAX_FETCH_PAGE_BYTES,
                        });
                    }
                    Ok(())
                }
                Self::Deleted { count } => {
                    if usize::try_from(*count).unwrap_or(usize::MAX) > MAX_DELETE_IDS {
                        return Err(WireError::Invalid { what: "deleted count over the limit" });
                    }
                    Ok(())
                }
            }
        }

        /// Checks the response against the request it answers: the right kind, no more items
        /// than asked for, only the mailboxes the tokens open, ids above the cursor in
        /// increasing order, no more deletions than ids named.
        pub fn validate_for(&self, request: &Request) -> Result<(), WireError> {
            self.validate()?;
            match (request, self) {
                (_, Self::Refused(_)) | (Request::Deposit { .. }, Self::Stored { .. }) => Ok(()),
                (Request::Fetch { tokens, after, limit, .. }, Self::Envelopes { items, .. }) => {
                    if items.len() > usize::try_from(*limit).unwrap_or(usize::MAX) {
                        return Err(WireError::Mismatch { what: "more envelopes than the limit" });
                    }
                    let asked: BTreeSet<MailboxId> = tokens.iter().map(MailboxId::of).collect();
                    let mut previous = *after;
                    for item in items {
                        if !asked.contains(&item.mailbox) {
                            return Err(WireError::Mismatch {
                                what: "envelope from a mailbox not asked for",
                            });
                        }
                        if previous.is_some_and(|p| item.id <= p) {
                            return Err(WireError::Mismatch {
                                what: "envelope ids not increasing past the cursor",
                            });
                        }
                        previous = Some(item.id);
                    }
                    Ok(())
                }
                (Request::Delete { ids, .. }, Self::Deleted { count }) => {
                    if usize::try_from(*count).unwrap_or(usize::MAX) > ids.len() {
                        return Err(WireError::Mismatch { what: "more deletions than ids named" });
                    }
                    Ok(())
                }
                _ => Err(WireError::Mismatch { what: "response of the wrong kind" }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mailbox::{Request, Response, StoredEnvelope};
    use super::*;
    use crate::mailbox::{FetchToken, MailboxId};

    /// A token of the right shape: these bounds do not look at proofs.
    fn token(n: u8) -> FetchToken {
        FetchToken { key: [n; 32], proof: [n; 64] }
    }

    fn fetch(tokens: usize, limit: u32, wait_ms: u32) -> Request {
        Request::Fetch { tokens: vec![token(1); tokens], after: None, limit, wait_ms }
    }

    #[test]
    fn request_bounds() {
        assert_eq!(deliver::Request { envelope: vec![1; MAX_ENVELOPE_LEN] }.validate(), Ok(()));
        let big = deliver::Request { envelope: vec![1; MAX_ENVELOPE_LEN + 1] }.validate().expect_err("big");
        assert_eq!(big.refusal(), Refusal::TooLarge { max: MAX_ENVELOPE_LEN as u32 });
        assert!(deliver::Request { envelope: Vec::new() }.validate().is_err());
        let deposit = |len| Request::Deposit { mailbox: MailboxId([0; 16]), envelope: vec![1; len] };
        assert_eq!(deposit(MAX_ENVELOPE_LEN).validate(), Ok(()));
        assert!(deposit(MAX_ENVELOPE_LEN + 1).validate().is_err());
        assert_eq!(fetch(MAX_FETCH_TOKENS, MAX_FETCH_LIMIT, MAX_FETCH_WAIT_MS).validate(), Ok(()));
        for bad in [
            fetch(0, 1, 0),
            fetch(MAX_FETCH_TOKENS + 1, 1, 0),
            fetch(1, 0, 0),
            fetch(1, MAX_FETCH_LIMIT + 1, 0),
            fetch(1, 1, MAX_FETCH_WAIT_MS + 1),
        ] {
            let err = bad.validate().expect_err("bad fetch");
            assert_eq!(err.refusal(), Refusal::Malformed);
        }
        let delete = |n| Request::Delete { token: token(2), ids: (0..n).collect() };
        assert_eq!(delete(MAX_DELETE_IDS as u64).validate(), Ok(()));
        assert!(delete(0).validate().is_err());
        assert!(delete(MAX_DELETE_IDS as u64 + 1).validate().is_err());
    }

    #[test]
    fn response_bounds_and_matching() {
        let token = token(3);
        let mailbox = MailboxId::of(&token);
        let item = |id, len| StoredEnvelope { mailbox, id, envelope: vec![0; len] };
        let request = Request::Fetch { tokens: vec![token.clone()], after: Some(10), limit: 3, wait_ms: 0 };
        let ok = Response::Envelopes { items: vec![item(11, 100), item(20, 100)], more: false };
        assert_eq!(ok.validate_for(&request), Ok(()));
        let too_many = Response::Envelopes {
            items: vec![item(11, 1), item(12, 1), item(13, 1), item(14, 1)],
            more: true,
        };
        assert!(matches!(too_many.validate_for(&request), Err(WireError::Mismatch { .. })));
        let stale = Response::Envelopes { items: vec![item(10, 1)], more: false };
        assert!(matches!(stale.validate_for(&request), Err(WireError::Mismatch { .. })));
        let unordered = Response::Envelopes { items: vec![item(12, 1), item(11, 1)], more: false };
        assert!(matches!(unordered.validate_for(&request), Err(WireError::Mismatch { .. })));
        let stranger = Response::Envelopes {
            items: vec![StoredEnvelope { mailbox: MailboxId([9; 16]), id: 11, envelope: vec![1] }],
            more: false,
        };
        assert!(matches!(stranger.validate_for(&request), Err(WireError::Mismatch { .. })));
        assert!(matches!(Response::Stored { id: 1 }.validate_for(&request), Err(WireError::Mismatch { .. })));
        assert_eq!(Response::Refused(Refusal::Unauthorized).validate_for(&request), Ok(()));
        let page = Response::Envelopes {
            items: (0..17).map(|i| item(100 + i, MAX_ENVELOPE_LEN)).collect(),
            more: true,
        };
        assert!(matches!(page.validate(), Err(WireError::TooLarge { what: "fetch page", .. })));
        let delete = Request::Delete { token, ids: vec![1, 2] };
        assert_eq!(Response::Deleted { count: 2 }.validate_for(&delete), Ok(()));
        assert!(Response::Deleted { count: 3 }.validate_for(&delete).is_err());
    }

    #[test]
    fn refusals_read_well() {
        assert_eq!(
            Refusal::TooLarge { max: 65_536 }.to_string(),
            "the message is too large (the limit is 65536 bytes)"
        );
        assert_eq!(
            Refusal::RateLimited { retry_after_ms: 1_500 }.to_string(),
            "too many requests; try again in 2 s"
        );
        assert_eq!(Refusal::MailboxFull.to_string(), "the recipient's mailbox is full");
    }
}
