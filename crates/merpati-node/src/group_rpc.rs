//! Control API methods for groups (`group.*`), and what a group message adds to its view.

use merpati_control::protocol::method::{self, Method};
use merpati_control::protocol::{
    GroupGap, GroupListResult, GroupMemberView, GroupRole, GroupView, MessageGroup, MessagesReadResult,
    Request, Response, SendResult,
};
use merpati_proto::Timestamp;
use merpati_proto::group::Role;
use merpati_proto::identity::fingerprint;

use crate::engine::{self, Engine, EngineError, group_conversation, group_of_conversation, hex};
use crate::rpc::{blocking, to_value};
use std::collections::HashMap;

use crate::store::{Direction, GroupRecord, SledStore, Status, Store, StoredMessage};

/// Answers a `group.*` request: `None` if `request` is not one.
pub(crate) fn handle(engine: &mut Engine<SledStore>, request: &Request, now: Timestamp) -> Option<Response> {
    let result = match request.method.as_str() {
        method::GroupCreate::NAME => match request.params_of::<method::GroupCreate>() {
            Err(answer) => return Some(answer),
            Ok(p) => {
                let members: Vec<&str> = p.members.iter().map(String::as_str).collect();
                blocking(|| engine.create_group(&p.name, &members, now)).and_then(|v| shown(engine, &v))
            }
        },
        method::GroupList::NAME => blocking(|| group_list(engine)).map(to_value),
        method::GroupShow::NAME => match request.params_of::<method::GroupShow>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| show(engine, &p.group)).map(to_value),
        },
        method::GroupAdd::NAME => match request.params_of::<method::GroupAdd>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| engine.group_add(&p.group, &p.member, now)).and_then(|v| shown(engine, &v)),
        },
        method::GroupRemove::NAME => match request.params_of::<method::GroupRemove>() {
            Err(answer) => return Some(answer),
            Ok(p) => {
                blocking(|| engine.group_remove(&p.group, &p.member, now)).and_then(|v| shown(engine, &v))
            }
        },
        method::GroupPromote::NAME => match request.params_of::<method::GroupPromote>() {
            Err(answer) => return Some(answer),
            Ok(p) => {
                blocking(|| engine.group_promote(&p.group, &p.member, now)).and_then(|v| shown(engine, &v))
            }
        },
        method::GroupRename::NAME => match request.params_of::<method::GroupRename>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| engine.group_rename(&p.group, &p.name, now)).and_then(|v| shown(engine, &v)),
        },
        method::GroupLeave::NAME => match request.params_of::<method::GroupLeave>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| engine.group_leave(&p.group, now)).and_then(|v| shown(engine, &v)),
        },
        method::GroupSend::NAME => match request.params_of::<method::GroupSend>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| engine.send_group_text(&p.group, &p.text, now))
                .map(|message| to_value(SendResult { id: crate::rpc::message_id(&message.id) })),
        },
        method::GroupRead::NAME => match request.params_of::<method::GroupRead>() {
            Err(answer) => return Some(answer),
            Ok(p) => blocking(|| engine.mark_group_read(&p.group, now)).map(|count| {
                to_value(MessagesReadResult { count: u32::try_from(count).unwrap_or(u32::MAX) })
            }),
        },
        _ => return None,
    };
    Some(match result {
        Ok(value) => Response::ok(request.id.clone(), value),
        Err(error) => crate::rpc::error_response(request.id.clone(), &error),
    })
}

fn shown(engine: &Engine<SledStore>, view: &engine::GroupView) -> Result<serde_json::Value, EngineError> {
    view_of(engine, view).map(to_value)
}

/// A group with the messages that never arrived, as `group.show` answers.
fn show(engine: &mut Engine<SledStore>, group: &str) -> Result<GroupView, EngineError> {
    let view = engine.group(group)?;
    let mut shown = view_of(engine, &view)?;
    for (identity, ranges) in engine.group_missing(group)? {
        let member = view.members.iter().position(|m| m.identity == identity);
        let name = member.map_or_else(|| fingerprint(&identity), |i| shown.members[i].name.clone());
        shown.missing.push(GroupGap { member: name, ranges });
    }
    Ok(shown)
}

/// A group as the control API shows it.
fn view_of(engine: &Engine<SledStore>, view: &engine::GroupView) -> Result<GroupView, EngineError> {
    let unread = engine.store().unread_count(&group_conversation(&view.id))?;
    Ok(GroupView {
        id: hex(&view.id.0),
        name: view.name.clone(),
        role: view.role.map(role_of),
        members: view
            .members
            .iter()
            .map(|m| GroupMemberView {
                name: if m.me {
                    "you".to_owned()
                } else {
                    m.contact.clone().or_else(|| m.name.clone()).unwrap_or_else(|| "owner".to_owned())
                },
                contact: m.contact.clone(),
                fingerprint: fingerprint(&m.identity),
                role: role_of(m.role),
                owner: m.owner,
                me: m.me,
            })
            .collect(),
        unread: u32::try_from(unread).unwrap_or(u32::MAX),
        missing: Vec::new(),
    })
}

fn role_of(role: Role) -> GroupRole {
    match role {
        Role::Member => GroupRole::Member,
        Role::Admin => GroupRole::Admin,
    }
}

/// Every group this node keeps, as `group.list` answers.
pub(crate) fn group_list(engine: &mut Engine<SledStore>) -> Result<GroupListResult, EngineError> {
    let views = engine.groups()?;
    let groups = views.iter().map(|v| view_of(engine, v)).collect::<Result<Vec<_>, _>>()?;
    Ok(GroupListResult { groups })
}

/// What showing group messages reads, kept for a page of them: each group's record (sealed,
/// the size of its log) once, and the contacts once, not once per message.
#[derive(Default)]
pub(crate) struct Lookups {
    records: HashMap<[u8; 16], Option<GroupRecord>>,
    contacts: Option<HashMap<[u8; 32], String>>,
}

impl Lookups {
    fn record(&mut self, store: &impl Store, id: &[u8; 16]) -> Option<GroupRecord> {
        self.records.entry(*id).or_insert_with(|| store.group(id).ok().flatten()).clone()
    }

    /// Our contact's name for `identity`, members kept for groups aside.
    fn contact(&mut self, store: &impl Store, identity: &[u8; 32]) -> Option<String> {
        let contacts = self.contacts.get_or_insert_with(|| {
            let all = store.contacts().unwrap_or_default();
            all.into_iter()
                .filter(|c| !engine::is_member_contact(&c.name))
                .map(|c| (*c.identity.as_bytes(), c.name))
                .collect()
        });
        contacts.get(identity).cloned()
    }
}

/// What a message of a group's conversation adds to its view; `None` for any other message.
pub(crate) fn message_group(
    store: &impl Store,
    message: &StoredMessage,
    lookups: &mut Lookups,
) -> Option<MessageGroup> {
    let group = group_of_conversation(&message.contact)?;
    let record = lookups.record(store, &group.0);
    let info = store.group_message(&message.id).ok().flatten();
    let mut view = MessageGroup {
        id: hex(&group.0),
        name: record.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        from: None,
        delivered: None,
        members: None,
        read: None,
    };
    let Some(info) = info else { return Some(view) };
    match message.direction {
        Direction::In => {
            let contact = lookups.contact(store, &info.sender);
            let named = record.and_then(|r| {
                if r.owner == info.sender {
                    return Some("the owner".to_owned());
                }
                r.names.into_iter().find(|(id, _)| *id == info.sender).map(|(_, n)| n)
            });
            // No longer a member (the log names members only): their fingerprint.
            let fingerprint = || {
                merpati_proto::identity::IdentityPublic::from_bytes(info.sender)
                    .map_or_else(|_| "a former member".to_owned(), |id| fingerprint(&id))
            };
            view.from = Some(contact.or(named).unwrap_or_else(fingerprint));
        }
        Direction::Out => {
            let delivered =
                info.copies.iter().filter(|c| matches!(c.status, Status::Delivered | Status::Read)).count();
            view.delivered = Some(u32::try_from(delivered).unwrap_or(u32::MAX));
            view.members = Some(u32::try_from(info.copies.len()).unwrap_or(u32::MAX));
            let read = info.copies.iter().filter(|c| c.status == Status::Read).count();
            view.read = Some(u32::try_from(read).unwrap_or(u32::MAX));
        }
    }
    Some(view)
}

/// How a member contact (a group member who is not the user's contact) is named in a message
/// they sent directly: by the name a group of ours gave them, and as not a contact.
pub(crate) fn member_shown(store: &impl Store, name: &str) -> String {
    let identity = store.contact(name).ok().flatten().map(|c| *c.identity.as_bytes());
    let named = identity.and_then(|identity| {
        let groups = store.groups().ok()?;
        groups.into_iter().find_map(|g| g.names.into_iter().find(|(id, _)| *id == identity).map(|(_, n)| n))
    });
    match named {
        Some(named) => format!("{named} (a group member, not a contact)"),
        None => "a group member, not a contact".to_owned(),
    }
}

/// The conversation `messages` lists for `group` (a name or id prefix).
pub(crate) fn conversation(engine: &mut Engine<SledStore>, group: &str) -> Result<String, EngineError> {
    Ok(group_conversation(&engine.group(group)?.id))
}
