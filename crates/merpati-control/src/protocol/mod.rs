//! The control API's JSON-RPC 2.0 envelopes and error codes (`docs/control-api.md`).
//!
//! Message flow on one Unix-socket connection, one JSON object per `\n`-terminated line, each at
//! most [`MAX_LINE`] bytes:
//!
//! 1. the client writes a [`Request`] (`{"jsonrpc":"2.0","id":…,"method":…,"params":{…}}`);
//! 2. the daemon answers every request, in order, with one [`Response`] carrying the same [`Id`]
//!    and either a `result` or an `error` ([`ErrorObject`]); a line that is not a valid request is
//!    answered with an error whose id is `null` (when no id could be read), and the connection
//!    stays open;
//! 3. after a successful `subscribe`, the daemon also writes [`Notification`]s (no id) whenever a
//!    message is stored or an outgoing message changes status ([`Event`]).
//!
//! Server side, [`parse_request`] turns a line into a [`Request`] or the error [`Response`] to
//! send back, and [`Request::params_of`] decodes the params of a [`Method`]. Client side,
//! [`crate::client::Client`] does all of this with types.

pub mod method;
mod types;

use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use method::Method;
pub use types::*;

/// The only JSON-RPC version spoken, the value of every `jsonrpc` member.
pub const JSONRPC_VERSION: &str = "2.0";
/// The longest line either side may write, in bytes, not counting the final `\n` (8 MiB): room
/// for the longest text (1 MiB of UTF-8) however JSON escapes it.
pub const MAX_LINE: usize = 8 * 1024 * 1024;
/// The most bytes of messages one `messages` or `messages.search` answer carries, as JSON: a page
/// of long texts stops short of its limit rather than overflow a line, and the next page starts
/// where it stopped.
pub const MAX_MESSAGES_BYTES: usize = MAX_LINE - 64 * 1024;

/// The line is not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON is not a valid request (not an object, wrong `jsonrpc`, no id, no method, a batch,
/// a line over [`MAX_LINE`]).
pub const INVALID_REQUEST: i64 = -32600;
/// No method by that name.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The params do not fit the method: missing, unknown or mistyped members.
pub const INVALID_PARAMS: i64 = -32602;
/// The daemon failed in a way that is not the caller's fault.
pub const INTERNAL_ERROR: i64 = -32603;

/// The application error codes (1–10), each with a message a person can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppError {
    /// 1: no contact has that name.
    UnknownContact,
    /// 2: the invite was refused; the message says what is wrong with it.
    InvalidInvite,
    /// 3: the text is longer than the daemon sends.
    MessageTooLarge,
    /// 4: a contact with that name (or that identity) already exists.
    ContactExists,
    /// 5: no message has that id.
    UnknownMessage,
    /// 6: the daemon's database failed.
    Storage,
    /// 7: a name that is empty, longer than 64 characters, or holds control characters.
    InvalidName,
    /// 8: a relay address that is not a multiaddr, lacks the relay's `/p2p/<peer id>`, or is a
    /// `p2p-circuit` address (an address *through* a relay, not of one); for `relay.remove`,
    /// neither a multiaddr nor a peer id.
    InvalidRelayAddress,
    /// 9: `relay.remove` named a relay that is not in the list.
    UnknownRelay,
    /// 10: the list already holds [`MAX_RELAYS`] relays, as many as an invite can carry.
    RelayListFull,
    /// 11: `relay.add` checked the address and found no relay there: nothing answered, or what
    /// answered keeps no mailboxes or relays no connections. The message says which.
    RelayCheckFailed,
    /// 12: no contact request has that id.
    UnknownRequest,
    /// 13: the contact request is too old to open; it was deleted.
    RequestExpired,
    /// 14: nobody blocked has that id.
    NotBlocked,
    /// 15: a file that cannot be sent: larger than this version sends, or a name or media type
    /// that is not allowed. The message says which.
    InvalidFile,
    /// 16: a backup could not be written: the passphrase is too short, or the path cannot be
    /// written. The message says which.
    Backup,
    /// 17: no group has that name or id, or several have that name.
    UnknownGroup,
    /// 18: the group does not allow the change or the message: you are not a member or lack the
    /// role, the contact is already (or not) a member, the group or the node is full. The
    /// message says which.
    GroupRefused,
}

impl AppError {
    /// Every application error, in code order.
    pub const ALL: [AppError; 18] = [
        AppError::UnknownContact,
        AppError::InvalidInvite,
        AppError::MessageTooLarge,
        AppError::ContactExists,
        AppError::UnknownMessage,
        AppError::Storage,
        AppError::InvalidName,
        AppError::InvalidRelayAddress,
        AppError::UnknownRelay,
        AppError::RelayListFull,
        AppError::RelayCheckFailed,
        AppError::UnknownRequest,
        AppError::RequestExpired,
        AppError::NotBlocked,
        AppError::InvalidFile,
        AppError::Backup,
        AppError::UnknownGroup,
        AppError::GroupRefused,
    ];

    /// The wire code.
    pub fn code(self) -> i64 {
        match self {
            AppError::UnknownContact => 1,
            AppError::InvalidInvite => 2,
            AppError::MessageTooLarge => 3,
            AppError::ContactExists => 4,
            AppError::UnknownMessage => 5,
            AppError::Storage => 6,
            AppError::InvalidName => 7,
            AppError::InvalidRelayAddress => 8,
            AppError::UnknownRelay => 9,
            AppError::RelayListFull => 10,
            AppError::RelayCheckFailed => 11,
            AppError::UnknownRequest => 12,
            AppError::RequestExpired => 13,
            AppError::NotBlocked => 14,
            AppError::InvalidFile => 15,
            AppError::Backup => 16,
            AppError::UnknownGroup => 17,
            AppError::GroupRefused => 18,
        }
    }

    /// The application error with wire code `code`, if it is one.
    pub fn from_code(code: i64) -> Option<AppError> {
        AppError::ALL.into_iter().find(|e| e.code() == code)
    }
}

/// The `jsonrpc` member: serializes as `"2.0"` and accepts nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(JSONRPC_VERSION)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let found = String::deserialize(d)?;
        if found == JSONRPC_VERSION {
            Ok(Version)
        } else {
            Err(D::Error::custom(format_args!("jsonrpc must be \"2.0\", not {found:?}")))
        }
    }
}

/// A request id: a JSON number or string, echoed in the answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A number (the client in this crate counts up from 1).
    Number(serde_json::Number),
    /// A string.
    String(String),
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// Echoed in the answer. Requests without an id (JSON-RPC notifications) are refused: every
    /// control method has an answer worth reading.
    pub id: Id,
    /// The method name, e.g. `contact.add`.
    pub method: String,
    /// Named params (an object); absent or `null` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    /// A request for method `M`.
    pub fn new<M: Method>(id: Id, params: &M::Params) -> Result<Request, serde_json::Error> {
        Ok(Request {
            jsonrpc: Version,
            id,
            method: M::NAME.to_owned(),
            params: Some(serde_json::to_value(params)?),
        })
    }

    /// The params decoded as `P`, or the `-32602` answer to send back. Absent params decode as
    /// `{}`, so methods without params accept `{}`, `null` or nothing.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, Response> {
        let empty = Value::Object(Map::new());
        let value = match &self.params {
            None | Some(Value::Null) => &empty,
            Some(object @ Value::Object(_)) => object,
            Some(_) => {
                return Err(Response::error(
                    Some(self.id.clone()),
                    INVALID_PARAMS,
                    format!("the params of {} must be an object with named members", self.method),
                    None,
                ));
            }
        };
        P::deserialize(value).map_err(|e| {
            Response::error(
                Some(self.id.clone()),
                INVALID_PARAMS,
                format!("invalid params for {}: {e}", self.method),
                None,
            )
        })
    }

    /// The params of method `M`, or the `-32602` answer to send back.
    pub fn params_of<M: Method>(&self) -> Result<M::Params, Response> {
        self.params::<M::Params>()
    }

    /// The `-32601` answer for a method this server does not know.
    pub fn method_not_found(&self) -> Response {
        Response::error(
            Some(self.id.clone()),
            METHOD_NOT_FOUND,
            format!("there is no method {:?}", truncate(&self.method, 64)),
            None,
        )
    }

    /// The request as one line, `\n` included.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        to_line(self)
    }
}

/// Parses one request line (without its `\n`). Never panics; the error is the answer to send
/// back, with the request's id when one could be read and `null` otherwise:
///
/// * longer than [`MAX_LINE`] → [`INVALID_REQUEST`];
/// * not JSON → [`PARSE_ERROR`];
/// * not an object (a batch included), no or bad id, `jsonrpc` not `"2.0"`, `method` not a
///   string, `params` neither an object nor an array, unknown members → [`INVALID_REQUEST`].
pub fn parse_request(line: &str) -> Result<Request, Response> {
    if line.len() > MAX_LINE {
        return Err(invalid_request(
            None,
            format!("the request is {} bytes long, more than the limit of {MAX_LINE}", line.len()),
        ));
    }
    let value: Value = serde_json::from_str(line).map_err(|e| {
        Response::error(None, PARSE_ERROR, format!("the request is not valid JSON: {e}"), None)
    })?;
    let mut map = match value {
        Value::Object(map) => map,
        Value::Array(_) => return Err(invalid_request(None, "batch requests are not supported")),
        _ => return Err(invalid_request(None, "a request must be a JSON object")),
    };
    let id = match map.remove("id") {
        None => {
            return Err(invalid_request(
                None,
                "the request has no id (every control request needs one; notifications are not accepted)",
            ));
        }
        Some(value) => Id::deserialize(value)
            .map_err(|_| invalid_request(None, "the request id must be a number or a string"))?,
    };
    match map.remove("jsonrpc") {
        Some(Value::String(v)) if v == JSONRPC_VERSION => {}
        _ => return Err(invalid_request(Some(id), "the request must have \"jsonrpc\": \"2.0\"")),
    }
    let method = match map.remove("method") {
        Some(Value::String(method)) => method,
        _ => return Err(invalid_request(Some(id), "the request must have a \"method\" string")),
    };
    let params = match map.remove("params") {
        None | Some(Value::Null) => None,
        Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
        Some(_) => return Err(invalid_request(Some(id), "\"params\" must be an object")),
    };
    if let Some(member) = map.keys().next() {
        let message = format!("the request has an unknown member {:?}", truncate(member, 64));
        return Err(invalid_request(Some(id), message));
    }
    Ok(Request { jsonrpc: Version, id, method, params })
}

fn invalid_request(id: Option<Id>, message: impl Into<String>) -> Response {
    Response::error(id, INVALID_REQUEST, message, None)
}

/// At most `max` characters of `s`, so error messages that quote the caller stay short.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The `error` member of an error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// One of the `*_ERROR`/`INVALID_*`/`METHOD_NOT_FOUND` constants or an [`AppError::code`].
    pub code: i64,
    /// What went wrong, in a sentence a person can act on.
    pub message: String,
    /// Details, where useful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Whether a [`Response`] succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `"result": …`
    Result(Value),
    /// `"error": {code, message, data?}`
    Error(ErrorObject),
}

/// An answer line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// The request's id; `null` when the request was too broken to read one.
    pub id: Option<Id>,
    /// The result or the error.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Response {
    /// A successful answer. A result that does not serialize (never the case for this crate's
    /// types) becomes an internal error rather than a panic.
    pub fn ok(id: Id, result: impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(value) => Response { jsonrpc: Version, id: Some(id), outcome: Outcome::Result(value) },
            Err(e) => {
                Response::error(Some(id), INTERNAL_ERROR, format!("cannot encode the result: {e}"), None)
            }
        }
    }

    /// An error answer.
    pub fn error(id: Option<Id>, code: i64, message: impl Into<String>, data: Option<Value>) -> Response {
        Response {
            jsonrpc: Version,
            id,
            outcome: Outcome::Error(ErrorObject { code, message: message.into(), data }),
        }
    }

    /// An application error answer ([`AppError`]).
    pub fn app_error(id: Id, error: AppError, message: impl Into<String>, data: Option<Value>) -> Response {
        Response::error(Some(id), error.code(), message, data)
    }

    /// The answer as one line, `\n` included.
    pub fn to_line(&self) -> String {
        // A response holds only `Value`s, whose maps have string keys, so this cannot fail; the
        // fallback keeps the connection protocol-correct if that ever changes.
        to_line(self).unwrap_or_else(|_| {
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"cannot encode the answer\"}}\n"
                .to_owned()
        })
    }
}

/// A notification line from the daemon (no id, no answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Always `"2.0"`.
    pub jsonrpc: Version,
    /// [`Event::MESSAGE`] or [`Event::STATUS`].
    pub method: String,
    /// The payload.
    #[serde(default)]
    pub params: Value,
}

impl Notification {
    /// The notification as one line, `\n` included.
    pub fn to_line(&self) -> String {
        // Like `Response::to_line`: only `Value`s inside, so encoding cannot fail.
        to_line(self).unwrap_or_default()
    }
}

/// What a subscribed connection is told, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message was stored (incoming, or outgoing as it was queued).
    Message(MessageView),
    /// An outgoing message changed status.
    Status(StatusUpdate),
    /// A contact request arrived or grew.
    Request(RequestView),
    /// A file's transfer moved on.
    Transfer(TransferUpdate),
    /// A contact's node was restored from a backup.
    Restored(RestoredNotice),
}

impl Event {
    /// The notification method for [`Event::Message`].
    pub const MESSAGE: &'static str = "message";
    /// The notification method for [`Event::Status`].
    pub const STATUS: &'static str = "status";
    /// The notification method for [`Event::Request`].
    pub const REQUEST: &'static str = "request";
    /// The notification method for [`Event::Transfer`].
    pub const TRANSFER: &'static str = "transfer";
    /// The notification method for [`Event::Restored`].
    pub const RESTORED: &'static str = "restored";

    /// The notification that carries this event.
    pub fn to_notification(&self) -> Notification {
        let (method, params) = match self {
            Event::Message(message) => (Event::MESSAGE, serde_json::to_value(message)),
            Event::Status(update) => (Event::STATUS, serde_json::to_value(update)),
            Event::Request(request) => (Event::REQUEST, serde_json::to_value(request)),
            Event::Transfer(update) => (Event::TRANSFER, serde_json::to_value(update)),
            Event::Restored(notice) => (Event::RESTORED, serde_json::to_value(notice)),
        };
        Notification { jsonrpc: Version, method: method.to_owned(), params: params.unwrap_or(Value::Null) }
    }

    /// The event a notification carries; `Ok(None)` for a notification method this version does
    /// not know (a newer daemon may send more kinds).
    pub fn from_notification(notification: &Notification) -> Result<Option<Event>, serde_json::Error> {
        Ok(Some(match notification.method.as_str() {
            Event::MESSAGE => Event::Message(MessageView::deserialize(&notification.params)?),
            Event::STATUS => Event::Status(StatusUpdate::deserialize(&notification.params)?),
            Event::REQUEST => Event::Request(RequestView::deserialize(&notification.params)?),
            Event::TRANSFER => Event::Transfer(TransferUpdate::deserialize(&notification.params)?),
            Event::RESTORED => Event::Restored(RestoredNotice::deserialize(&notification.params)?),
            _ => return Ok(None),
        }))
    }
}

/// A line the daemon wrote: an answer or a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An answer to a request.
    Response(Response),
    /// A notification.
    Notification(Notification),
}

/// Parses a line the daemon wrote. A line with a `method` member is a notification, anything
/// else must be a response.
pub fn parse_incoming(line: &str) -> Result<Incoming, serde_json::Error> {
    if line.len() > MAX_LINE {
        return Err(serde_json::Error::custom(format_args!("line longer than {MAX_LINE} bytes")));
    }
    let value: Value = serde_json::from_str(line)?;
    if value.get("method").is_some() {
        Ok(Incoming::Notification(Notification::deserialize(value)?))
    } else {
        Ok(Incoming::Response(Response::deserialize(value)?))
    }
}

fn to_line(value: &impl Serialize) -> Result<String, serde_json::Error> {
    let mut line = serde_json::to_string(value)?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests;
