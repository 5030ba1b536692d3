//! Control API methods: each request turned into engine calls and a typed answer.

use libp2p::Multiaddr;
use merpati_control::home::Home;
use merpati_control::protocol::method::{self, Method};
use merpati_control::protocol::{
    self, AppError, BackupResult, BlockedListResult, BlockedView, ContactAddResult, ContactListResult,
    ContactNameResult, ContactShowResult, ContactSummary, Direction as ViewDirection, FileView, InviteResult,
    MessageDeleteResult, MessageStatus, MessageView, MessagesReadResult, MessagesResult, RejectResult,
    RelayListResult, RelayView, Request, RequestAcceptResult, RequestListResult, RequestView, Response,
    SendParams, SendResult, StatusResult, StatusUpdate, StoredCount,
};
use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::identity::{SafetyNumber, fingerprint};
use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::net;
use crate::store::{
    Blocked, ContactRequest, Direction, RequestId, SledStore, Status, Store, StoredMessage, TransferSide,
};
use crate::transfers::spool::Spool;

/// Answers one control request received at `now`.
pub(crate) async fn handle(
    engine: &mut Engine<SledStore>,
    net: &net::Handle,
    spool: &Spool,
    request: &Request,
    now: Timestamp,
) -> Response {
    let id = request.id.clone();
    let result = match request.method.as_str() {
        method::Status::NAME => status(engine, net).await.map(to_value),
        method::Invite::NAME => invite(engine, net, now).await.map(to_value),
        method::ContactAdd::NAME => match request.params_of::<method::ContactAdd>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| engine.add_contact(&params.invite, &params.name, now)).map(|contact| {
                to_value(ContactAddResult {
                    name: contact.name,
                    fingerprint: fingerprint(&contact.identity),
                    safety_number: SafetyNumber::new(&engine.profile().identity.public(), &contact.identity)
                        .to_string(),
                })
            }),
        },
        method::ContactList::NAME => contact_list(engine, net).await.map(to_value),
        method::ContactRename::NAME => match request.params_of::<method::ContactRename>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let name = engine.resolve_contact(&params.name)?;
                engine.rename_contact(&name, &params.new_name)
            })
            .map(|c| to_value(ContactNameResult { name: c.name, fingerprint: fingerprint(&c.identity) })),
        },
        method::ContactRemove::NAME => match request.params_of::<method::ContactRemove>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let name = engine.resolve_contact(&params.name)?;
                engine.remove_contact(&name)
            })
            .map(|c| to_value(ContactNameResult { name: c.name, fingerprint: fingerprint(&c.identity) })),
        },
        method::ContactClear::NAME => match request.params_of::<method::ContactClear>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let name = engine.resolve_contact(&params.name)?;
                engine.clear_conversation(&name)
            })
            .map(|c| to_value(ContactNameResult { name: c.name, fingerprint: fingerprint(&c.identity) })),
        },
        method::ContactBlock::NAME => match request.params_of::<method::ContactBlock>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let name = engine.resolve_contact(&params.name)?;
                engine.block_contact(&name, now)
            })
            .map(|b| to_value(blocked_view(&b))),
        },
        method::ContactUnblock::NAME => match request.params_of::<method::ContactUnblock>() {
            Err(answer) => return answer,
            Ok(params) => request_id(&params.id)
                .map_err(|_| EngineError::NotBlocked(params.id.clone()))
                .and_then(|id| blocking(|| engine.unblock(&id)))
                .map(|b| to_value(blocked_view(&b))),
        },
        method::ContactBlocked::NAME => engine
            .store()
            .blocked()
            .map(|all| to_value(BlockedListResult { blocked: all.iter().map(blocked_view).collect() }))
            .map_err(EngineError::from),
        method::Requests::NAME => request_list(engine).map(to_value),
        method::RequestsAccept::NAME => match request.params_of::<method::RequestsAccept>() {
            Err(answer) => return answer,
            Ok(params) => request_id(&params.id)
                .and_then(|id| blocking(|| engine.accept_request(&id, &params.name, now)))
                .map(|accepted| {
                    let contact = accepted.contact;
                    to_value(RequestAcceptResult {
                        fingerprint: fingerprint(&contact.identity),
                        safety_number: SafetyNumber::new(
                            &engine.profile().identity.public(),
                            &contact.identity,
                        )
                        .to_string(),
                        name: contact.name,
                        opened: u32::try_from(accepted.opened).unwrap_or(u32::MAX),
                    })
                }),
        },
        method::RequestsReject::NAME => match request.params_of::<method::RequestsReject>() {
            Err(answer) => return answer,
            Ok(params) => request_id(&params.id)
                .and_then(|id| blocking(|| engine.reject_request(&id, now)))
                .map(|()| to_value(RejectResult {})),
        },
        method::RequestsBlock::NAME => match request.params_of::<method::RequestsBlock>() {
            Err(answer) => return answer,
            Ok(params) => request_id(&params.id)
                .and_then(|id| blocking(|| engine.block_request(&id, now)))
                .map(|b| to_value(blocked_view(&b))),
        },
        method::ContactShow::NAME => match request.params_of::<method::ContactShow>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let name = engine.resolve_contact(&params.name)?;
                contact_show(engine, &name, now)
            })
            .map(to_value),
        },
        method::Send::NAME => match request.params_of::<method::Send>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let to = engine.resolve_contact(&params.to)?;
                engine.send_text(&to, &params.text, now)
            })
            .map(|message| to_value(SendResult { id: message_id(&message.id) })),
        },
        method::SendFile::NAME => match request.params_of::<method::SendFile>() {
            Err(answer) => return answer,
            Ok(params) => crate::transfers::send::send_file(engine, net, spool, &params, now)
                .await
                .map(|message| to_value(SendResult { id: message_id(&message.id) })),
        },
        method::MessageFile::NAME => match request.params_of::<method::MessageFile>() {
            Err(answer) => return answer,
            Ok(params) => {
                blocking(|| crate::transfers::send::file_slice(engine, spool, &params)).map(to_value)
            }
        },
        method::MessageStatus::NAME => match request.params_of::<method::MessageStatus>() {
            Err(answer) => return answer,
            Ok(params) => engine.message(&MessageId(params.id.to_bytes())).map(|m| {
                to_value(StatusUpdate {
                    id: params.id.clone(),
                    status: status_of(m.status),
                    stored: stored_of(m.status),
                    reason: m.reason,
                })
            }),
        },
        method::MessagesDelete::NAME => match request.params_of::<method::MessagesDelete>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| engine.delete_message(&MessageId(params.id.to_bytes())))
                .map(|m| to_value(MessageDeleteResult { id: params.id.clone(), contact: m.contact })),
        },
        method::Messages::NAME => match request.params_of::<method::Messages>() {
            Err(answer) => return answer,
            Ok(params) => {
                let limit = params.effective_limit() as usize;
                blocking(|| {
                    let with = match (&params.with, &params.group) {
                        (_, Some(group)) => Some(crate::group_rpc::conversation(engine, group)?),
                        (Some(name), None) => Some(engine.resolve_contact(name)?),
                        (None, None) => None,
                    };
                    let before = match &params.before {
                        Some(id) => Some(engine.message(&MessageId(id.to_bytes()))?.order),
                        None => None,
                    };
                    Ok(to_value(page_within_line(engine.store(), with.as_deref(), before, limit)?))
                })
            }
        },
        method::MessagesSearch::NAME => match request.params_of::<method::MessagesSearch>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| search(engine, &params)).map(to_value),
        },
        method::MessagesRead::NAME => match request.params_of::<method::MessagesRead>() {
            Err(answer) => return answer,
            Ok(params) => blocking(|| {
                let with = engine.resolve_contact(&params.with)?;
                engine.mark_read(&with, now)
            })
            .map(|count| to_value(MessagesReadResult { count: u32::try_from(count).unwrap_or(u32::MAX) })),
        },
        method::RelayList::NAME => Ok(to_value(relay_list(engine, net).await)),
        method::RelayAdd::NAME => match request.params_of::<method::RelayAdd>() {
            Err(answer) => return answer,
            Ok(params) => match params.addr.trim().parse::<Multiaddr>() {
                Err(e) => {
                    Err(EngineError::InvalidRelay(format!("\"{}\" is not an address: {e}", params.addr)))
                }
                Ok(addr) => match blocking(|| engine.add_relay(&addr.to_vec(), now)) {
                    Ok(_) => Ok(to_value(relay_list(engine, net).await)),
                    Err(e) => Err(e),
                },
            },
        },
        method::RelayRemove::NAME => match request.params_of::<method::RelayRemove>() {
            Err(answer) => return answer,
            Ok(params) => match relay_peer(&params.relay) {
                Err(e) => Err(e),
                Ok(peer) => match blocking(|| engine.remove_relay(&peer.to_bytes(), now)) {
                    Ok(()) => Ok(to_value(relay_list(engine, net).await)),
                    Err(e) => Err(e),
                },
            },
        },
        _ => {
            return crate::group_rpc::handle(engine, request, now)
                .unwrap_or_else(|| request.method_not_found());
        }
    };
    match result {
        Ok(value) => Response::ok(id, value),
        Err(error) => error_response(id, &error),
    }
}

/// Whether `request` is a `send`, which [`handle_sends`] can answer together with others.
pub(crate) fn is_send(request: &Request) -> bool {
    request.method == method::Send::NAME
}

/// Answers `send` requests received together, in order, queuing every text they carry with one
/// durable write; a request with bad parameters gets its own error and does not hold up the rest.
/// Each answer comes with the message queued, if it was, for the daemon to announce.
pub(crate) fn handle_sends(
    engine: &mut Engine<SledStore>,
    requests: &[&Request],
    now: Timestamp,
) -> Vec<(Response, Option<StoredMessage>)> {
    // Each recipient as the user typed it, resolved to the stored name; one that matches no
    // contact is answered on its own.
    let params: Vec<Result<SendParams, Response>> = requests
        .iter()
        .map(|request| {
            let mut params = request.params_of::<method::Send>()?;
            params.to = blocking(|| engine.resolve_contact(&params.to))
                .map_err(|error| error_response(request.id.clone(), &error))?;
            Ok(params)
        })
        .collect();
    let sends: Vec<(&str, &str)> =
        params.iter().filter_map(|p| p.as_ref().ok()).map(|p| (p.to.as_str(), p.text.as_str())).collect();
    let mut results = blocking(|| engine.send_texts(&sends, now)).into_iter();
    requests
        .iter()
        .zip(params)
        .map(|(request, params)| match params {
            Err(answer) => (answer, None),
            Ok(_) => match results.next() {
                Some(Ok(message)) => (
                    Response::ok(request.id.clone(), to_value(SendResult { id: message_id(&message.id) })),
                    Some(message),
                ),
                Some(Err(error)) => (error_response(request.id.clone(), &error), None),
                None => {
                    (error_response(request.id.clone(), &EngineError::NotSaved("no answer".into())), None)
                }
            },
        })
        .collect()
}

/// Answers `backup`: writes a backup of the node to the path given. The engine task waits while
/// it is written (a few seconds for a large history), so what it holds is one moment's state.
pub(crate) fn backup(engine: &Engine<SledStore>, home: &Home, request: &Request, now: Timestamp) -> Response {
    let params = match request.params_of::<method::Backup>() {
        Err(answer) => return answer,
        Ok(params) => params,
    };
    let path = std::path::Path::new(&params.path);
    if !path.is_absolute() {
        return Response::app_error(
            request.id.clone(),
            AppError::Backup,
            format!("the backup's path must be absolute, not {}", params.path),
            None,
        );
    }
    match blocking(|| crate::backup::write(engine.store(), home, &params.passphrase, path, now)) {
        Ok(written) => Response::ok(
            request.id.clone(),
            to_value(BackupResult {
                path: written.path.display().to_string(),
                contacts: written.contacts as u64,
                messages: written.messages as u64,
                files: written.files as u64,
                bytes: written.bytes,
            }),
        ),
        Err(e) => Response::app_error(request.id.clone(), AppError::Backup, e.to_string(), None),
    }
}

pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

pub(crate) fn to_value(value: impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn error_response(id: protocol::Id, error: &EngineError) -> Response {
    let kind = match error {
        EngineError::UnknownContact(_)
        | EngineError::UnknownContactLike { .. }
        | EngineError::AmbiguousContact { .. } => AppError::UnknownContact,
        EngineError::InvalidInvite(_) | EngineError::NoKeys(_) => AppError::InvalidInvite,
        EngineError::TooLarge { .. } | EngineError::TooLargeBeforeAnswer { .. } => AppError::MessageTooLarge,
        EngineError::InvalidFile(_) => AppError::InvalidFile,
        EngineError::ContactExists(_) => AppError::ContactExists,
        EngineError::UnknownMessage(_) => AppError::UnknownMessage,
        EngineError::InvalidName(_) => AppError::InvalidName,
        EngineError::InvalidRelay(_) => AppError::InvalidRelayAddress,
        EngineError::UnknownRelay(_) => AppError::UnknownRelay,
        EngineError::TooManyRelays { .. } => AppError::RelayListFull,
        EngineError::UnknownRequest(_) => AppError::UnknownRequest,
        EngineError::RequestExpired(_) => AppError::RequestExpired,
        EngineError::NotBlocked(_) => AppError::NotBlocked,
        EngineError::BlockedIdentity(_) => AppError::InvalidInvite,
        EngineError::UnknownGroup(_) | EngineError::AmbiguousGroup { .. } => AppError::UnknownGroup,
        EngineError::GroupRefused(_)
        | EngineError::NotInGroup(_)
        | EngineError::AlreadyInGroup { .. }
        | EngineError::NotInGroupMember { .. }
        | EngineError::GroupFull(_)
        | EngineError::TooManyGroups(_) => AppError::GroupRefused,
        EngineError::Store(_)
        | EngineError::NotSaved(_)
        | EngineError::Seal(_)
        | EngineError::ForeignDatabase => AppError::Storage,
    };
    Response::app_error(id, kind, error.to_string(), None)
}

async fn status(engine: &Engine<SledStore>, net: &net::Handle) -> Result<StatusResult, EngineError> {
    let connected = connected_contacts(engine, net).await?;
    Ok(StatusResult {
        peer_id: net.local_peer_id().to_string(),
        listen: net.listen_addrs().await.iter().map(ToString::to_string).collect(),
        connected,
        outbox: engine.store().outbox_len()? as u64,
        fingerprint: fingerprint(&engine.profile().identity.public()),
        name: engine.me().name.clone(),
    })
}

async fn connected_contacts(
    engine: &Engine<SledStore>,
    net: &net::Handle,
) -> Result<Vec<String>, EngineError> {
    let peers: Vec<Vec<u8>> = net.connected_peers().await.iter().map(|p| p.to_bytes()).collect();
    Ok(engine
        .store()
        .contacts()?
        .into_iter()
        .filter(|c| peers.contains(&c.peer_id) && !crate::engine::is_member_contact(&c.name))
        .map(|c| c.name)
        .collect())
}

async fn invite(
    engine: &Engine<SledStore>,
    net: &net::Handle,
    now: Timestamp,
) -> Result<InviteResult, EngineError> {
    // Invites carry addresses without the trailing `/p2p/<id>` (the peer id travels separately).
    let addrs = net.listen_addrs().await.into_iter().map(|addr| strip_p2p(addr).to_vec()).collect();
    let invite = engine.invite(net.local_peer_id().to_bytes(), addrs, now)?;
    Ok(InviteResult { invite })
}

fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

async fn contact_list(
    engine: &Engine<SledStore>,
    net: &net::Handle,
) -> Result<ContactListResult, EngineError> {
    let connected = connected_contacts(engine, net).await?;
    let store = engine.store();
    let contacts = store
        .contacts()?
        .into_iter()
        // Group members who are not the user's contacts are shown with their groups.
        .filter(|c| !crate::engine::is_member_contact(&c.name))
        .map(|c| {
            Ok(ContactSummary {
                fingerprint: fingerprint(&c.identity),
                connected: connected.contains(&c.name),
                last_heard: c.last_heard.map(|t| t.millis()),
                restored_at: c.restored_at.map(|t| t.millis()),
                unread: u64::try_from(store.unread_count(&c.name)?).unwrap_or(u64::MAX),
                name: c.name,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    Ok(ContactListResult { contacts })
}

fn contact_show(
    engine: &mut Engine<SledStore>,
    name: &str,
    now: Timestamp,
) -> Result<ContactShowResult, EngineError> {
    let contact =
        engine.store().contact(name)?.ok_or_else(|| EngineError::UnknownContact(name.to_owned()))?;
    let missing = engine.missing(name, now)?;
    Ok(ContactShowResult {
        fingerprint: fingerprint(&contact.identity),
        safety_number: SafetyNumber::new(&engine.profile().identity.public(), &contact.identity).to_string(),
        peer_id: libp2p::PeerId::from_bytes(&contact.peer_id).map(|p| p.to_string()).unwrap_or_default(),
        addrs: contact
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .map(|a| a.to_string())
            .collect(),
        name: contact.name,
        missing,
        last_heard: contact.last_heard.map(|t| t.millis()),
        restored_at: contact.restored_at.map(|t| t.millis()),
    })
}

/// A control-API message id from a protocol one.
pub(crate) fn message_id(id: &MessageId) -> protocol::MessageId {
    protocol::MessageId::from_bytes(id.0)
}

/// The control-API name of a status.
pub(crate) fn status_of(status: Status) -> MessageStatus {
    match status {
        Status::Queued => MessageStatus::Queued,
        Status::Sent => MessageStatus::Sent,
        Status::Stored { .. } => MessageStatus::Stored,
        Status::Delivered => MessageStatus::Delivered,
        Status::Read => MessageStatus::Read,
        Status::Failed => MessageStatus::Failed,
    }
}

/// How many relays hold a message, for a message in the `stored` status.
pub(crate) fn stored_of(status: Status) -> Option<StoredCount> {
    match status {
        Status::Stored { accepted, total } => {
            Some(StoredCount { accepted: u32::from(accepted), total: u32::from(total) })
        }
        _ => None,
    }
}

/// The newest messages matching `params`; an empty text, or one over
/// [`protocol::MAX_SEARCH_LEN`] bytes, is refused as too large a message is.
fn search(
    engine: &Engine<SledStore>,
    params: &protocol::SearchParams,
) -> Result<MessagesResult, EngineError> {
    if params.text.is_empty() || params.text.len() > protocol::MAX_SEARCH_LEN {
        return Err(EngineError::TooLarge { len: params.text.len(), max: protocol::MAX_SEARCH_LEN });
    }
    let with = params.with.as_deref().map(|name| engine.resolve_contact(name)).transpose()?;
    let found = engine.store().search(with.as_deref(), &params.text, params.effective_limit() as usize)?;
    Ok(within_line(engine.store(), &found))
}

/// Messages read per step of [`page_within_line`]: at most 16 MiB of long texts in memory.
const PAGE_STEP: usize = 16;

/// The `limit` messages with `with` (or everyone) before conversation order `before` (or the
/// newest), oldest first, read newest first a few at a time and stopped once the answer would not
/// fit one control line ([`protocol::MAX_MESSAGES_BYTES`] of JSON; then `cut`). Only pages of long
/// texts are cut short, and the daemon never holds more than one step of them besides the answer.
fn page_within_line(
    store: &impl Store,
    with: Option<&str>,
    before: Option<u64>,
    limit: usize,
) -> Result<MessagesResult, EngineError> {
    let mut answer = Answer::default();
    let mut cursor = before;
    while answer.views.len() < limit {
        let want = PAGE_STEP.min(limit - answer.views.len());
        let step = match cursor {
            Some(order) => store.messages_before(with, order, want)?,
            None => store.messages(with, want)?,
        };
        if !answer.take_newest_first(store, &step) || step.len() < want {
            break;
        }
        cursor = step.first().map(|m| m.order);
    }
    Ok(answer.into_result())
}

/// `messages` (oldest first) as an answer that fits one control line: the newest that fit.
fn within_line(store: &impl Store, messages: &[StoredMessage]) -> MessagesResult {
    let mut answer = Answer::default();
    answer.take_newest_first(store, messages);
    answer.into_result()
}

/// An answer being filled, newest message first, within [`protocol::MAX_MESSAGES_BYTES`].
#[derive(Default)]
struct Answer {
    views: Vec<MessageView>,
    bytes: usize,
    cut: bool,
}

impl Answer {
    /// Adds `messages` (oldest first) from the newest back; false once one did not fit.
    fn take_newest_first(&mut self, store: &impl Store, messages: &[StoredMessage]) -> bool {
        let mut lookups = crate::group_rpc::Lookups::default();
        for message in messages.iter().rev() {
            let view = message_view_with(store, message, &mut lookups);
            let len = serde_json::to_vec(&view).map_or(usize::MAX, |json| json.len() + 1);
            if self.bytes.saturating_add(len) > protocol::MAX_MESSAGES_BYTES && !self.views.is_empty() {
                self.cut = true;
                return false;
            }
            self.bytes = self.bytes.saturating_add(len);
            self.views.push(view);
        }
        true
    }

    fn into_result(mut self) -> MessagesResult {
        self.views.reverse();
        MessagesResult { messages: self.views, cut: self.cut }
    }
}

/// A request (or blocked sender's) id as the user typed it.
fn request_id(text: &str) -> Result<RequestId, EngineError> {
    text.trim().to_ascii_lowercase().parse().map_err(|()| EngineError::UnknownRequest(text.to_owned()))
}

fn request_list(engine: &Engine<SledStore>) -> Result<RequestListResult, EngineError> {
    Ok(RequestListResult {
        requests: engine.requests()?.iter().map(request_view).collect(),
        dropped: engine.store().requests_dropped()?,
    })
}

/// How a contact request is shown on the control API.
pub(crate) fn request_view(request: &ContactRequest) -> RequestView {
    RequestView {
        id: request.id.to_string(),
        fingerprint: fingerprint(&request.identity),
        suggested_name: request.suggested_name.clone(),
        preview: request.preview.clone(),
        envelopes: u32::try_from(request.envelopes.len()).unwrap_or(u32::MAX),
        dropped: request.dropped,
        first_at: request.first_at,
        last_at: request.last_at,
    }
}

fn blocked_view(blocked: &Blocked) -> BlockedView {
    BlockedView {
        id: RequestId::of(&blocked.identity).to_string(),
        fingerprint: fingerprint(&blocked.identity),
        label: blocked.label.clone(),
        since: blocked.at,
    }
}

/// Whether `request` deleted sealed records (a contact's sessions, messages' texts, content keys):
/// the daemon then replaces the storage key, so the copies of them the database leaves behind
/// can no longer be opened.
pub(crate) fn shreds(request: &Request) -> bool {
    matches!(
        request.method.as_str(),
        method::ContactRemove::NAME
            | method::ContactBlock::NAME
            | method::ContactClear::NAME
            | method::MessagesDelete::NAME
            | method::RequestsAccept::NAME
            | method::RequestsReject::NAME
            | method::RequestsBlock::NAME
    )
}

/// Whether `request` may have changed our relays (the daemon then re-syncs the network).
pub(crate) fn changes_relays(request: &Request) -> bool {
    matches!(request.method.as_str(), method::RelayAdd::NAME | method::RelayRemove::NAME)
}

/// The relay a user named for removal: a multiaddr ending in `/p2p/<id>`, or a bare peer id.
fn relay_peer(text: &str) -> Result<libp2p::PeerId, EngineError> {
    let text = text.trim();
    if let Ok(peer) = text.parse::<libp2p::PeerId>() {
        return Ok(peer);
    }
    let addr = text.parse::<Multiaddr>().map_err(|_| {
        EngineError::InvalidRelay(format!("\"{text}\" is neither a relay address nor a peer id"))
    })?;
    net::peer_of(&addr)
        .ok_or_else(|| EngineError::InvalidRelay(format!("\"{text}\" does not end in /p2p/<peer id>")))
}

/// Our relays with what the network knows of each.
async fn relay_list(engine: &Engine<SledStore>, net: &net::Handle) -> RelayListResult {
    let status = net.relays().await;
    let connected = net.connected_peers().await;
    let relays = engine
        .relays()
        .into_iter()
        .filter_map(|bytes| Multiaddr::try_from(bytes).ok())
        .map(|addr| {
            let peer = net::peer_of(&addr);
            RelayView {
                peer_id: peer.map(|p| p.to_string()).unwrap_or_default(),
                connected: peer.is_some_and(|p| connected.contains(&p)),
                reserved: peer.is_some_and(|p| status.iter().any(|s| s.peer == p && s.reserved)),
                addr: addr.to_string(),
            }
        })
        .collect();
    RelayListResult { relays }
}

/// Why message `id`'s file will not come (a download given up), or why relays refused our file.
fn failed_download(store: &impl Store, id: &MessageId) -> Option<String> {
    match store.transfer(id) {
        Ok(Some(transfer)) => match &transfer.side {
            TransferSide::Download { failed } => failed.clone(),
            TransferSide::Upload { refused, .. } => (!refused.is_empty())
                .then(|| refused.iter().map(|(_, why)| why.as_str()).collect::<Vec<_>>().join("; ")),
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("a message's file transfer cannot be read: {e}");
            None
        }
    }
}

/// How a stored message is shown on the control API.
pub(crate) fn message_view(store: &impl Store, message: &StoredMessage) -> MessageView {
    message_view_with(store, message, &mut crate::group_rpc::Lookups::default())
}

/// [`message_view`], reading what group messages need through `lookups`, shared by a page.
fn message_view_with(
    store: &impl Store,
    message: &StoredMessage,
    lookups: &mut crate::group_rpc::Lookups,
) -> MessageView {
    let outgoing = message.direction == Direction::Out;
    let file = match store.file_info(&message.id) {
        Ok(info) => info.map(|info| FileView {
            failed: if info.here && !outgoing { None } else { failed_download(store, &message.id) },
            name: info.name,
            media_type: info.media_type,
            size: info.len,
            here: info.here,
        }),
        Err(e) => {
            tracing::warn!("a message's file cannot be read: {e}");
            None
        }
    };
    let group = crate::group_rpc::message_group(store, message, lookups);
    MessageView {
        id: message_id(&message.id),
        direction: if outgoing { ViewDirection::Out } else { ViewDirection::In },
        // A group's conversation shows as the group's name; a member's who is not a contact, by
        // the name a group gave them.
        contact: match &group {
            Some(g) => g.name.clone(),
            None if crate::engine::is_member_contact(&message.contact) => {
                crate::group_rpc::member_shown(store, &message.contact)
            }
            None => message.contact.clone(),
        },
        time: message.time,
        text: message.text.clone(),
        status: outgoing.then(|| status_of(message.status)),
        stored: stored_of(message.status),
        reason: if outgoing { message.reason.clone() } else { None },
        seq: message.seq,
        file,
        group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Change, Contact, Direction, MemoryStore, Status};
    use merpati_proto::Timestamp;
    use merpati_proto::identity::IdentityKey;
    use rand_core::SeedableRng;

    /// A page of long texts stops short of its limit, says so, and paging on reaches the rest.
    #[test]
    fn pages_of_long_texts_fit_one_line_and_say_they_were_cut() {
        let store = MemoryStore::new();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let identity = IdentityKey::generate(&mut rng).public();
        let contact = Contact {
            name: "bob".into(),
            identity,
            bundle: None,
            inbox: None,
            peer_id: Vec::new(),
            addrs: Vec::new(),
            relays: Vec::new(),
            session: None,
            added_at: Timestamp(1),
            last_resort: None,
            last_heard: None,
            restored_at: None,
        };
        let mut changes = vec![Change::AddContact(contact)];
        for i in 0..20u8 {
            changes.push(Change::PutMessage(StoredMessage {
                id: MessageId([i; 16]),
                contact: "bob".into(),
                direction: Direction::In,
                time: Timestamp(u64::from(i)),
                text: format!("{i:02}").repeat(500 * 1024),
                seq: None,
                status: Status::Delivered,
                reason: None,
                order: 0,
            }));
        }
        store.apply(&changes).unwrap();
        let first = page_within_line(&store, Some("bob"), None, 100).unwrap();
        assert!(first.cut);
        assert_eq!(first.messages.len(), 8, "8 texts of 1000 KiB fit 8 MiB - 64 KiB");
        assert_eq!(first.messages.last().map(|m| &m.text[..2]), Some("19"), "the newest of the page");
        let json = serde_json::to_vec(&first).unwrap();
        assert!(json.len() < protocol::MAX_LINE);
        let mut seen = first.messages.len();
        let mut before = store.message(&MessageId([12; 16])).unwrap().map(|m| m.order);
        while let Some(order) = before {
            let page = page_within_line(&store, Some("bob"), Some(order), 100).unwrap();
            seen += page.messages.len();
            before = match page.messages.first() {
                Some(m) => store.message(&MessageId(m.id.to_bytes())).unwrap().map(|m| m.order),
                None => None,
            };
        }
        assert_eq!(seen, 20, "paging on with before reaches every message");
        let short = page_within_line(&store, Some("bob"), None, 3).unwrap();
        assert_eq!((short.messages.len(), short.cut), (3, false), "within the line: not cut");
    }

    /// A direct text from a group member who is not a contact names them as the group does.
    #[test]
    fn a_member_who_is_not_a_contact_is_named_by_their_group() {
        let store = MemoryStore::new();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let identity = IdentityKey::generate(&mut rng).public();
        let name = crate::engine::member_contact_name(&identity);
        let member = crate::engine::tests_member_contact(&name, identity);
        let mut group = crate::store::GroupRecord::new([7; 16], Timestamp(1));
        group.names = vec![(*identity.as_bytes(), "carol".into())];
        let message = StoredMessage::received(MessageId([1; 16]), &name, Timestamp(2), "hai".into(), 0);
        store
            .apply(&[
                Change::AddContact(member),
                Change::PutGroup(group),
                Change::PutMessage(message.clone()),
            ])
            .unwrap();
        assert_eq!(message_view(&store, &message).contact, "carol (a group member, not a contact)");
    }
}
