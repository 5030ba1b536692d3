//! What the chat asks of merpatid, as a trait: the real one over the control API, and a fake in
//! the unit tests so the screen's logic is tested without a daemon.

use std::time::Duration;

use merpati_control::client::Config;
use merpati_control::protocol::{
    ContactShowParams, ContactSummary, GroupParams, GroupSendParams, GroupView, MessageId, MessageView,
    MessagesParams, MessagesReadParams, NoParams, RequestAcceptParams, RequestIdParams, RequestView,
    SendParams, method,
};
use merpati_control::{Client, ClientError, Home};

use super::app::With;
use crate::commands::files::FileToSend;

/// The calls the chat makes. Each answers or fails with the daemon's own error.
pub(crate) trait Daemon {
    /// The name this node gave itself at `init`, if any.
    fn own_name(&mut self) -> Result<Option<String>, ClientError>;
    /// Every contact, with unread counts.
    fn contacts(&mut self) -> Result<Vec<ContactSummary>, ClientError>;
    /// Every group this node keeps (also those it is no longer a member of), with unread counts.
    fn groups(&mut self) -> Result<Vec<GroupView>, ClientError>;
    /// The contact requests waiting for a decision.
    fn requests(&mut self) -> Result<Vec<RequestView>, ClientError>;
    /// At most `limit` of the latest messages of the conversation `with` a contact or a group
    /// (before `before`, if given), oldest first, and whether the daemon cut the page short
    /// (long texts): then fewer than `limit` does not mean the start of the conversation was
    /// reached.
    fn messages(
        &mut self,
        with: &With,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<MessageView>, bool), ClientError>;
    /// Queues `text` to `contact`.
    fn send(&mut self, contact: &str, text: &str) -> Result<MessageId, ClientError>;
    /// Queues `text` to every other member of the group with id `group`.
    fn send_group(&mut self, group: &str, text: &str) -> Result<MessageId, ClientError>;
    /// Queues a file read with [`crate::commands::files::read_for_sending`] to `contact`.
    fn send_file(&mut self, contact: &str, file: FileToSend) -> Result<MessageId, ClientError>;
    /// Marks the conversation with `contact` read.
    fn mark_read(&mut self, contact: &str) -> Result<(), ClientError>;
    /// Marks the incoming messages of the group with id `group` read.
    fn mark_group_read(&mut self, group: &str) -> Result<(), ClientError>;
    /// Accepts the request `id` as a contact named `name`; answers the name stored.
    fn accept(&mut self, id: &str, name: &str) -> Result<String, ClientError>;
    /// Deletes the request `id`.
    fn reject(&mut self, id: &str) -> Result<(), ClientError>;
    /// Deletes the request `id` and drops what its sender sends from now on.
    fn block(&mut self, id: &str) -> Result<(), ClientError>;
}

/// How long one call may take before the chat says the daemon does not answer: short, because
/// the screen waits for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon of a home, one short connection per call (a local socket: cheap, and nothing to
/// repair after the daemon restarts).
#[derive(Debug)]
pub(crate) struct ControlDaemon {
    home: Home,
}

impl ControlDaemon {
    /// The daemon of `home`.
    pub(crate) fn new(home: Home) -> ControlDaemon {
        ControlDaemon { home }
    }

    fn call<M: method::Method>(&self, params: M::Params) -> Result<M::Result, ClientError> {
        let config = Config::default().with_read_timeout(Some(CALL_TIMEOUT));
        Client::connect_with(&self.home, config)?.call::<M>(params)
    }
}

impl Daemon for ControlDaemon {
    fn own_name(&mut self) -> Result<Option<String>, ClientError> {
        Ok(self.call::<method::Status>(NoParams {})?.name)
    }

    fn contacts(&mut self) -> Result<Vec<ContactSummary>, ClientError> {
        Ok(self.call::<method::ContactList>(NoParams {})?.contacts)
    }

    fn groups(&mut self) -> Result<Vec<GroupView>, ClientError> {
        Ok(self.call::<method::GroupList>(NoParams {})?.groups)
    }

    fn requests(&mut self) -> Result<Vec<RequestView>, ClientError> {
        Ok(self.call::<method::Requests>(NoParams {})?.requests)
    }

    fn messages(
        &mut self,
        with: &With,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<MessageView>, bool), ClientError> {
        let (with, group) = match with {
            With::Contact(name) => (Some(name.clone()), None),
            // By id: a name may be shared by several groups, and a group may be renamed.
            With::Group { id, .. } => (None, Some(id.clone())),
        };
        let params = MessagesParams { group, with, limit: Some(limit), before };
        let answer = self.call::<method::Messages>(params)?;
        Ok((answer.messages, answer.cut))
    }

    fn send(&mut self, contact: &str, text: &str) -> Result<MessageId, ClientError> {
        let params = SendParams { to: contact.to_owned(), text: text.to_owned() };
        Ok(self.call::<method::Send>(params)?.id)
    }

    fn send_group(&mut self, group: &str, text: &str) -> Result<MessageId, ClientError> {
        let params = GroupSendParams { group: group.to_owned(), text: text.to_owned() };
        Ok(self.call::<method::GroupSend>(params)?.id)
    }

    fn send_file(&mut self, contact: &str, file: FileToSend) -> Result<MessageId, ClientError> {
        Ok(self.call::<method::SendFile>(file.params(contact, String::new()))?.id)
    }

    fn mark_read(&mut self, contact: &str) -> Result<(), ClientError> {
        self.call::<method::MessagesRead>(MessagesReadParams { with: contact.to_owned() }).map(drop)
    }

    fn mark_group_read(&mut self, group: &str) -> Result<(), ClientError> {
        self.call::<method::GroupRead>(GroupParams { group: group.to_owned() }).map(drop)
    }

    fn accept(&mut self, id: &str, name: &str) -> Result<String, ClientError> {
        let params = RequestAcceptParams { id: id.to_owned(), name: name.to_owned() };
        Ok(self.call::<method::RequestsAccept>(params)?.name)
    }

    fn reject(&mut self, id: &str) -> Result<(), ClientError> {
        self.call::<method::RequestsReject>(RequestIdParams { id: id.to_owned() }).map(drop)
    }

    fn block(&mut self, id: &str) -> Result<(), ClientError> {
        self.call::<method::RequestsBlock>(RequestIdParams { id: id.to_owned() }).map(drop)
    }
}

/// The stored name of the contact `typed` names (names match whatever their case), so
/// `merpati chat BOB` opens the conversation with `bob`.
pub(crate) fn stored_name(home: &Home, typed: &str) -> Result<String, ClientError> {
    let params = ContactShowParams { name: typed.to_owned() };
    Ok(ControlDaemon::new(home.clone()).call::<method::ContactShow>(params)?.name)
}
