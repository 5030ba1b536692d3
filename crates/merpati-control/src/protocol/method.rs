//! One marker type per control method, tying its name to its params and result types, so that
//! `client.call::<method::Send>(params)` is checked by the compiler on both ends.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{
    BackupParams, BackupResult, BlockedListResult, BlockedView, ContactAddParams, ContactAddResult,
    ContactListResult, ContactNameResult, ContactRenameParams, ContactShowParams, ContactShowResult,
    GroupCreateParams, GroupListResult, GroupMemberParams, GroupParams, GroupRenameParams, GroupSendParams,
    GroupView, InviteResult, MessageDeleteResult, MessageFileParams, MessageFileResult, MessageStatusParams,
    MessagesParams, MessagesReadParams, MessagesReadResult, MessagesResult, NoParams, RejectResult,
    RelayAddParams, RelayListResult, RelayRemoveParams, RequestAcceptParams, RequestAcceptResult,
    RequestIdParams, RequestListResult, SearchParams, SendFileParams, SendParams, SendResult, StatusResult,
    StatusUpdate, SubscribeResult,
};

/// A control method: its wire name and the types of its params and result.
pub trait Method {
    /// The wire name, e.g. `contact.add`.
    const NAME: &'static str;
    /// The `params` object.
    type Params: Serialize + DeserializeOwned + Debug + Clone + PartialEq;
    /// The `result` object.
    type Result: Serialize + DeserializeOwned + Debug + Clone + PartialEq;
}

macro_rules! methods {
    ($($(#[$doc:meta])* $marker:ident = $name:literal, $params:ty => $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $marker;

            impl Method for $marker {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method name, in the order of `docs/control-api.md`.
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

methods! {
    /// `status`: the node's peer id, addresses, connected contacts and outbox size.
    Status = "status", NoParams => StatusResult;
    /// `invite`: a fresh invite for this node.
    Invite = "invite", NoParams => InviteResult;
    /// `contact.add`: accept someone's invite under a local name.
    ContactAdd = "contact.add", ContactAddParams => ContactAddResult;
    /// `contact.list`: every contact.
    ContactList = "contact.list", NoParams => ContactListResult;
    /// `contact.show`: one contact, with the safety number.
    ContactShow = "contact.show", ContactShowParams => ContactShowResult;
    /// `contact.rename`: give a contact another name; the conversation follows.
    ContactRename = "contact.rename", ContactRenameParams => ContactNameResult;
    /// `contact.remove`: delete a contact with its conversation, queued messages and session
    /// keys.
    ContactRemove = "contact.remove", ContactShowParams => ContactNameResult;
    /// `contact.clear`: delete every message of a conversation from this device (their texts
    /// cannot be recovered from the database files); the contact stays.
    ContactClear = "contact.clear", ContactShowParams => ContactNameResult;
    /// `contact.block`: remove a contact and drop whatever they send from now on.
    ContactBlock = "contact.block", ContactShowParams => BlockedView;
    /// `contact.unblock`: stop dropping someone's envelopes.
    ContactUnblock = "contact.unblock", RequestIdParams => BlockedView;
    /// `contact.blocked`: everyone blocked.
    ContactBlocked = "contact.blocked", NoParams => BlockedListResult;
    /// `requests`: first contacts from people not in the contacts, waiting for a decision.
    Requests = "requests", NoParams => RequestListResult;
    /// `requests.accept`: make a request's sender a contact under a name of the user's choice.
    RequestsAccept = "requests.accept", RequestAcceptParams => RequestAcceptResult;
    /// `requests.reject`: delete a request.
    RequestsReject = "requests.reject", RequestIdParams => RejectResult;
    /// `requests.block`: delete a request and drop whatever its sender sends from now on.
    RequestsBlock = "requests.block", RequestIdParams => BlockedView;
    /// `send`: queue a text to a contact.
    Send = "send", SendParams => SendResult;
    /// `send.file`: queue a file (up to 25 MiB) to a contact.
    SendFile = "send.file", SendFileParams => SendResult;
    /// `message.status`: where an outgoing message is.
    MessageStatus = "message.status", MessageStatusParams => StatusUpdate;
    /// `message.file`: the file a message carries, with up to 1 MiB of its bytes.
    MessageFile = "message.file", MessageFileParams => MessageFileResult;
    /// `messages`: the latest messages, oldest first.
    Messages = "messages", MessagesParams => MessagesResult;
    /// `messages.search`: the newest messages whose text contains a given text, whatever its
    /// case, oldest first.
    MessagesSearch = "messages.search", SearchParams => MessagesResult;
    /// `messages.read`: mark a conversation's incoming messages read (and tell the sender, if
    /// read receipts are on).
    MessagesRead = "messages.read", MessagesReadParams => MessagesReadResult;
    /// `messages.delete`: delete one message from this device; its text cannot be recovered from
    /// the database files.
    MessagesDelete = "messages.delete", MessageStatusParams => MessageDeleteResult;
    /// `relay.add`: use one more relay (at most [`super::MAX_RELAYS`]); answers every relay.
    RelayAdd = "relay.add", RelayAddParams => RelayListResult;
    /// `relay.list`: the relays this node uses, with their connection and reservation state.
    RelayList = "relay.list", NoParams => RelayListResult;
    /// `relay.remove`: stop using a relay, named by multiaddr or peer id; answers every relay
    /// left.
    RelayRemove = "relay.remove", RelayRemoveParams => RelayListResult;
    /// `subscribe`: turn this connection into a notification stream as well.
    Subscribe = "subscribe", NoParams => SubscribeResult;
    /// `backup`: write a backup of this node, encrypted to a passphrase, to a file.
    Backup = "backup", BackupParams => BackupResult;
    /// `group.create`: a new group owned by this node, with contacts in it.
    GroupCreate = "group.create", GroupCreateParams => GroupView;
    /// `group.list`: every group this node keeps.
    GroupList = "group.list", NoParams => GroupListResult;
    /// `group.show`: one group with its members.
    GroupShow = "group.show", GroupParams => GroupView;
    /// `group.add`: add a contact to a group (admins).
    GroupAdd = "group.add", GroupMemberParams => GroupView;
    /// `group.remove`: remove a member from a group (admins; an admin, the owner only).
    GroupRemove = "group.remove", GroupMemberParams => GroupView;
    /// `group.promote`: make a member an admin (the owner only).
    GroupPromote = "group.promote", GroupMemberParams => GroupView;
    /// `group.rename`: rename a group (admins).
    GroupRename = "group.rename", GroupRenameParams => GroupView;
    /// `group.leave`: leave a group; nothing more is sent to it from here.
    GroupLeave = "group.leave", GroupParams => GroupView;
    /// `group.send`: queue a text to every other member of a group.
    GroupSend = "group.send", GroupSendParams => SendResult;
    /// `group.read`: mark a group's incoming messages read.
    GroupRead = "group.read", GroupParams => MessagesReadResult;
}
