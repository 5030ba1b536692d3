//! What the chat screen holds and how keys and the daemon's news change it. No terminal here:
//! the view draws an [`App`], and the tests drive one with a fake daemon.

use std::collections::HashMap;

use merpati_control::ClientError;
use merpati_control::protocol::{
    ContactSummary, Direction, Event, GroupView, MessageId, MessageView, RequestView, StatusUpdate,
    TransferUpdate,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::text::Line;

use super::daemon::Daemon;
use super::input::Input;
use super::link::Update;
use super::transcript;
use crate::output::sanitize;

/// How many messages one load reads: the newest page when a conversation opens, and each page
/// further back as a person scrolls up.
pub(crate) const PAGE: u32 = 200;

/// What the commands typed in the input line are, for the help and for errors.
pub(crate) const COMMANDS: &str = "/file PATH (at most 48 KiB), /accept NAME, /reject, /block (on a request), /quit; // starts a text with /";

/// Which entry of the list on the left is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Nothing yet (no contacts and no requests).
    Nothing,
    /// The conversation with this contact (its stored name).
    Contact(String),
    /// The conversation of the group with this id.
    Group(String),
    /// The contact request with this id.
    Request(String),
}

/// Whom a conversation is with. A group is known by its id: a contact may be named like a
/// group, several groups may share a name, and a group may be renamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum With {
    /// A contact, by stored name.
    Contact(String),
    /// A group: its id (32 hex digits), and its name to show.
    Group {
        /// The id.
        id: String,
        /// The name.
        name: String,
    },
}

impl With {
    /// Whom `message` is with: its group if it has one (its `contact` is then the group's
    /// name), else its contact.
    pub(crate) fn of(message: &MessageView) -> With {
        match &message.group {
            Some(group) => With::Group { id: group.id.clone(), name: group.name.clone() },
            None => With::Contact(message.contact.clone()),
        }
    }

    /// Its entry in the list on the left.
    pub(crate) fn entry(&self) -> Selection {
        match self {
            With::Contact(name) => Selection::Contact(name.clone()),
            With::Group { id, .. } => Selection::Group(id.clone()),
        }
    }
}

/// The open conversation: the messages loaded so far and how far back the view is scrolled.
#[derive(Debug)]
pub(crate) struct Conversation {
    /// Whom it is with.
    pub(crate) with: With,
    /// Loaded messages, oldest first; changed only through the methods, which drop `layout`.
    messages: Vec<MessageView>,
    /// Whether the conversation's first message is loaded: nothing older to page back to.
    pub(crate) complete: bool,
    /// How many lines up from the newest the view shows; 0 follows new messages.
    pub(crate) scroll: usize,
    /// The messages laid out at a width, kept until they or the width change: laying out a long
    /// text again on every key would make typing lag.
    layout: Option<(u16, Vec<Line<'static>>)>,
    /// How far the files of these messages that are on the move have come.
    transfers: HashMap<MessageId, TransferUpdate>,
}

impl Conversation {
    fn new(with: With, messages: Vec<MessageView>, complete: bool) -> Conversation {
        Conversation { with, messages, complete, scroll: 0, layout: None, transfers: HashMap::new() }
    }

    /// The messages as screen lines `width` columns wide.
    pub(crate) fn lines(&mut self, width: u16) -> &[Line<'static>] {
        if self.layout.as_ref().is_none_or(|(laid_out, _)| *laid_out != width) {
            self.layout = Some((width, transcript::lines(&self.messages, &self.transfers, width)));
        }
        self.layout.as_ref().map_or(&[], |(_, lines)| lines.as_slice())
    }

    /// Adds a message announced just now; false if it is shown already (it is then replaced: a
    /// file may have arrived since).
    fn push(&mut self, message: MessageView) -> bool {
        self.layout = None;
        if let Some(shown) = self.messages.iter_mut().find(|m| m.id == message.id) {
            *shown = message;
            return false;
        }
        self.messages.push(message);
        true
    }

    /// Notes how far a file of this conversation has come.
    fn set_transfer(&mut self, update: TransferUpdate) {
        if self.messages.iter().any(|m| m.id == update.id) {
            self.transfers.insert(update.id.clone(), update);
            self.layout = None;
        }
    }

    /// Moves a shown message's status on.
    fn set_status(&mut self, update: StatusUpdate) {
        if let Some(message) = self.messages.iter_mut().find(|m| m.id == update.id) {
            message.status = Some(update.status);
            message.stored = update.stored;
            message.reason = update.reason;
            self.layout = None;
        }
    }

    /// Puts an older page before what is loaded.
    fn prepend(&mut self, mut older: Vec<MessageView>) {
        older.append(&mut self.messages);
        self.messages = older;
        self.layout = None;
    }
}

/// A line for the person under the conversation: what just went wrong, or what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    /// The sentence.
    pub(crate) text: String,
    /// Whether it reports a failure.
    pub(crate) error: bool,
}

/// Whether the daemon can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not known yet.
    Connecting,
    /// Subscribed: the screen is live.
    Up,
    /// Gone, and why; the link keeps trying.
    Down(String),
}

/// The size of the conversation pane, as last drawn: paging moves by its height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pane {
    /// Columns.
    pub(crate) width: u16,
    /// Rows.
    pub(crate) height: u16,
}

/// Everything on the chat screen.
#[derive(Debug)]
pub(crate) struct App {
    /// The name this node gave itself, for the title.
    pub(crate) own_name: Option<String>,
    /// Every contact, as the daemon listed them, with unread counts kept current.
    pub(crate) contacts: Vec<ContactSummary>,
    /// Every group, as the daemon listed them, with unread counts kept current.
    pub(crate) groups: Vec<GroupView>,
    /// Contact requests waiting for a decision.
    pub(crate) requests: Vec<RequestView>,
    /// The open entry.
    pub(crate) selection: Selection,
    /// The open conversation, when a contact or a group is selected.
    pub(crate) conversation: Option<Conversation>,
    /// The text being typed.
    pub(crate) input: Input,
    /// The last thing to tell the person.
    pub(crate) notice: Option<Notice>,
    /// Whether the daemon can be reached.
    pub(crate) link: LinkState,
    /// The conversation pane's size as last drawn.
    pub(crate) pane: Pane,
    /// Set when the person asked to leave.
    pub(crate) quit: bool,
    /// Whether the terminal has the focus (terminals that do not report it always do): in the
    /// background, what arrives is not on anyone's screen.
    pub(crate) focused: bool,
}

impl App {
    /// A screen that opens the conversation with `first` once the contacts are loaded, or the
    /// first conversation.
    pub(crate) fn new(first: Option<String>) -> App {
        App {
            own_name: None,
            contacts: Vec::new(),
            groups: Vec::new(),
            requests: Vec::new(),
            selection: first.map_or(Selection::Nothing, Selection::Contact),
            conversation: None,
            input: Input::default(),
            notice: None,
            link: LinkState::Connecting,
            pane: Pane { width: 80, height: 20 },
            quit: false,
            focused: true,
        }
    }

    /// Reads everything afresh: contacts, groups, requests and the open conversation. Used at the
    /// start and after the daemon comes back, so nothing announced while away is missed.
    pub(crate) fn reload(&mut self, daemon: &mut dyn Daemon) {
        let result = (|| -> Result<(), ClientError> {
            self.own_name = daemon.own_name()?;
            self.contacts = daemon.contacts()?;
            self.groups = daemon.groups()?;
            self.requests = daemon.requests()?;
            Ok(())
        })();
        if let Err(e) = result {
            self.fail(&e);
            return;
        }
        let still_there = match &self.selection {
            Selection::Nothing => false,
            Selection::Contact(name) => self.contacts.iter().any(|c| c.name == *name),
            Selection::Group(id) => self.groups.iter().any(|g| g.id == *id),
            Selection::Request(id) => self.requests.iter().any(|r| r.id == *id),
        };
        if !still_there {
            self.selection = self.entries().into_iter().next().unwrap_or(Selection::Nothing);
        }
        let keep_scroll = self.conversation.as_ref().map_or(0, |c| c.scroll);
        self.open(daemon);
        if let Some(conversation) = &mut self.conversation {
            conversation.scroll = keep_scroll;
        }
    }

    /// Takes in what the link reports.
    pub(crate) fn update(&mut self, update: Update, daemon: &mut dyn Daemon) {
        match update {
            Update::Connected => {
                self.link = LinkState::Up;
                // An error from while the daemon was away is old news now.
                if self.notice.as_ref().is_some_and(|n| n.error) {
                    self.notice = None;
                }
                self.reload(daemon);
            }
            Update::Lost(reason) => self.link = LinkState::Down(reason),
            Update::Event(event) => match *event {
                Event::Message(message) => self.on_message(message, daemon),
                Event::Status(update) => {
                    if let Some(conversation) = &mut self.conversation {
                        conversation.set_status(update);
                    }
                }
                Event::Transfer(update) => {
                    if let Some(conversation) = &mut self.conversation {
                        conversation.set_transfer(update);
                    }
                }
                Event::Request(_) => match daemon.requests() {
                    Ok(requests) => self.requests = requests,
                    Err(e) => self.fail(&e),
                },
                Event::Restored(notice) => {
                    let text = format!(
                        "{} restored from a backup: their new device has your conversation, and what they missed is sent again",
                        sanitize(&notice.contact)
                    );
                    self.tell(&text, false);
                }
            },
        }
    }

    /// A key pressed.
    pub(crate) fn key(&mut self, key: KeyEvent, daemon: &mut dyn Daemon) {
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt_or_shift = key.modifiers.intersects(KeyModifiers::ALT | KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Char('c' | 'q') if control => self.quit = true,
            KeyCode::Char('d') if control && self.input.is_empty() => self.quit = true,
            // A new line: Alt+Enter or Shift+Enter where the terminal tells them apart, and
            // Ctrl+J everywhere.
            KeyCode::Enter if alt_or_shift => self.input.insert('\n'),
            KeyCode::Char('j') if control => self.input.insert('\n'),
            KeyCode::Enter => self.submit(daemon),
            KeyCode::Tab => self.step(1, daemon),
            KeyCode::BackTab => self.step(-1, daemon),
            KeyCode::PageUp => self.scroll_up(self.page_step(), daemon),
            KeyCode::PageDown => self.scroll_down(self.page_step(), daemon),
            // In a text of several lines the arrows move the cursor; otherwise they scroll.
            KeyCode::Up if !self.input.up() => self.scroll_up(1, daemon),
            KeyCode::Down if !self.input.down() => self.scroll_down(1, daemon),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Esc => self.notice = None,
            KeyCode::Char(c) if !control && !key.modifiers.contains(KeyModifiers::ALT) => {
                self.input.insert(c)
            }
            _ => {}
        }
    }

    /// Text pasted into the terminal (bracketed paste): typed into the input, newlines and all.
    pub(crate) fn paste(&mut self, text: &str) {
        self.input.insert_str(text);
    }

    /// The terminal gained or lost the focus. Coming back to the newest messages reads them.
    pub(crate) fn focus(&mut self, focused: bool, daemon: &mut dyn Daemon) {
        self.focused = focused;
        if let Some(conversation) = &self.conversation
            && focused
            && conversation.scroll == 0
        {
            let with = conversation.with.clone();
            self.mark_read(&with, daemon);
        }
    }

    /// The entries of the list on the left, in order: contacts, groups, then requests.
    pub(crate) fn entries(&self) -> Vec<Selection> {
        let contacts = self.contacts.iter().map(|c| Selection::Contact(c.name.clone()));
        let groups = self.groups.iter().map(|g| Selection::Group(g.id.clone()));
        let requests = self.requests.iter().map(|r| Selection::Request(r.id.clone()));
        contacts.chain(groups).chain(requests).collect()
    }

    /// The selected group, when a group is selected.
    pub(crate) fn selected_group(&self) -> Option<&GroupView> {
        match &self.selection {
            Selection::Group(id) => self.groups.iter().find(|g| g.id == *id),
            _ => None,
        }
    }

    /// The selected request, when a request is selected.
    pub(crate) fn selected_request(&self) -> Option<&RequestView> {
        match &self.selection {
            Selection::Request(id) => self.requests.iter().find(|r| r.id == *id),
            _ => None,
        }
    }

    fn on_message(&mut self, message: MessageView, daemon: &mut dyn Daemon) {
        let with = With::of(&message);
        let known = match &with {
            With::Contact(name) => self.contacts.iter().any(|c| c.name == *name),
            With::Group { id, .. } => self.groups.iter().any(|g| g.id == *id),
        };
        if !known {
            // A contact added meanwhile (a request accepted, an invite added elsewhere), or a
            // group we were just added to.
            let listed = match &with {
                With::Contact(_) => daemon.contacts().map(|contacts| self.contacts = contacts),
                With::Group { .. } => daemon.groups().map(|groups| self.groups = groups),
            };
            if let Err(e) = listed {
                self.fail(&e);
            }
            if self.selection == Selection::Nothing {
                self.selection = with.entry();
                self.open(daemon);
                return;
            }
        }
        let incoming = message.direction == Direction::In;
        let shown_now = match &mut self.conversation {
            // By entry, not by `contact`: a group's messages carry its name there.
            Some(conversation) if conversation.with.entry() == with.entry() => {
                if !conversation.push(message) {
                    // Already on screen (loaded, or announced before): nothing new.
                    return;
                }
                conversation.scroll == 0 && self.focused
            }
            _ => false,
        };
        if !incoming {
            return;
        }
        if shown_now {
            // On screen is read: the contact sees `read` (if read receipts are on; a group's
            // members are not told).
            let read = match &with {
                With::Contact(name) => daemon.mark_read(name),
                With::Group { id, .. } => daemon.mark_group_read(id),
            };
            if let Err(e) = read {
                self.fail(&e);
            }
            return;
        }
        if !known {
            // The list read just now counts it already: the daemon stores before it announces.
            return;
        }
        match &with {
            With::Contact(name) => {
                if let Some(summary) = self.contacts.iter_mut().find(|c| c.name == *name) {
                    summary.unread += 1;
                }
            }
            With::Group { id, .. } => {
                if let Some(group) = self.groups.iter_mut().find(|g| g.id == *id) {
                    group.unread = group.unread.saturating_add(1);
                }
            }
        }
    }

    /// Whom the selected entry's conversation is with; `None` for a request or nothing.
    fn selected_with(&self) -> Option<With> {
        match &self.selection {
            Selection::Contact(name) => Some(With::Contact(name.clone())),
            Selection::Group(id) => {
                let name =
                    self.groups.iter().find(|g| g.id == *id).map_or_else(|| id.clone(), |g| g.name.clone());
                Some(With::Group { id: id.clone(), name })
            }
            Selection::Request(_) | Selection::Nothing => None,
        }
    }

    /// Loads the selected conversation (its newest page) and marks it read.
    fn open(&mut self, daemon: &mut dyn Daemon) {
        self.conversation = None;
        let Some(with) = self.selected_with() else { return };
        match daemon.messages(&with, None, PAGE) {
            Ok((messages, cut)) => {
                let complete = messages.len() < PAGE as usize && !cut;
                self.conversation = Some(Conversation::new(with.clone(), messages, complete));
                self.mark_read(&with, daemon);
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Marks the conversation `with` read, if anything in it is unread.
    fn mark_read(&mut self, with: &With, daemon: &mut dyn Daemon) {
        let result = match with {
            With::Contact(name) => {
                let Some(summary) = self.contacts.iter_mut().find(|c| c.name == *name) else { return };
                if summary.unread == 0 {
                    return;
                }
                daemon.mark_read(name).map(|()| summary.unread = 0)
            }
            With::Group { id, .. } => {
                let Some(group) = self.groups.iter_mut().find(|g| g.id == *id) else { return };
                if group.unread == 0 {
                    return;
                }
                daemon.mark_group_read(id).map(|()| group.unread = 0)
            }
        };
        if let Err(e) = result {
            self.fail(&e);
        }
    }

    /// Moves the selection `by` entries along the list, wrapping around.
    fn step(&mut self, by: isize, daemon: &mut dyn Daemon) {
        let entries = self.entries();
        if entries.is_empty() {
            return;
        }
        let at = entries.iter().position(|e| *e == self.selection).unwrap_or(0);
        let len = entries.len() as isize;
        let next = (at as isize + by).rem_euclid(len) as usize;
        self.selection = entries[next].clone();
        self.open(daemon);
    }

    fn page_step(&self) -> usize {
        usize::from(self.pane.height).saturating_sub(2).max(1)
    }

    /// Lines the transcript has beyond one screen: the furthest the view can scroll back.
    fn max_scroll(&mut self) -> usize {
        let Pane { width, height } = self.pane;
        let Some(conversation) = &mut self.conversation else { return 0 };
        conversation.lines(width).len().saturating_sub(usize::from(height))
    }

    fn scroll_up(&mut self, by: usize, daemon: &mut dyn Daemon) {
        let Some(conversation) = &self.conversation else { return };
        let (wanted, complete) = (conversation.scroll + by, conversation.complete);
        // Past the oldest loaded line: read the page before it first.
        if wanted > self.max_scroll() && !complete {
            self.load_older(daemon);
        }
        let max = self.max_scroll();
        if let Some(conversation) = &mut self.conversation {
            conversation.scroll = wanted.min(max);
        }
    }

    fn scroll_down(&mut self, by: usize, daemon: &mut dyn Daemon) {
        let Some(conversation) = &mut self.conversation else { return };
        conversation.scroll = conversation.scroll.saturating_sub(by);
        if conversation.scroll == 0 {
            // Back at the newest: whatever arrived while scrolled up is on screen now.
            let with = conversation.with.clone();
            self.mark_read(&with, daemon);
        }
    }

    fn load_older(&mut self, daemon: &mut dyn Daemon) {
        let Some(conversation) = &mut self.conversation else { return };
        let Some(oldest) = conversation.messages.first().map(|m| m.id.clone()) else {
            conversation.complete = true;
            return;
        };
        match daemon.messages(&conversation.with, Some(oldest), PAGE) {
            Ok((older, cut)) => {
                conversation.complete = older.len() < PAGE as usize && !cut;
                conversation.prepend(older);
            }
            Err(e) => self.fail(&e),
        }
    }

    /// Enter: a command, or a text to the open conversation. What was typed stays in the input
    /// unless it went through.
    fn submit(&mut self, daemon: &mut dyn Daemon) {
        let typed = self.input.text();
        if typed.trim().is_empty() {
            return;
        }
        let done = match typed.strip_prefix('/') {
            Some(rest) if !rest.starts_with('/') => self.command(rest.trim(), daemon),
            Some(rest) => self.send(rest.to_owned(), daemon),
            None => self.send(typed, daemon),
        };
        if done {
            self.input.take();
        }
    }

    fn send(&mut self, text: String, daemon: &mut dyn Daemon) -> bool {
        let sent = match &self.selection {
            Selection::Contact(name) => daemon.send(name, &text),
            // A group we are no longer in is refused by the daemon, whose reason `after_send`
            // tells like any other refusal.
            Selection::Group(id) => daemon.send_group(id, &text),
            Selection::Request(_) => {
                self.tell("this is a contact request: /accept NAME makes them a contact first", true);
                return false;
            }
            Selection::Nothing => {
                self.tell("no conversation is open: add a contact with merpati contact add", true);
                return false;
            }
        };
        self.after_send(sent)
    }

    /// What a send's answer changes: on success the view follows the new message down (it shows
    /// as the daemon announces it, at once); on failure the reason is told and the input kept.
    fn after_send(&mut self, sent: Result<MessageId, ClientError>) -> bool {
        match sent {
            Ok(_) => {
                if let Some(conversation) = &mut self.conversation {
                    conversation.scroll = 0;
                }
                self.notice = None;
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// `/file PATH`: sends a file to the open conversation.
    fn send_file(&mut self, path: &str, daemon: &mut dyn Daemon) -> bool {
        if let Selection::Group(_) = self.selection {
            self.tell("files cannot be sent to a group yet: /file sends to a contact's conversation", true);
            return false;
        }
        let Selection::Contact(name) = self.selection.clone() else {
            self.tell("/file sends to the open conversation: open one first (Tab)", true);
            return false;
        };
        if path.is_empty() {
            self.tell("/file needs the file's path, e.g. /file ~/photo.jpg", true);
            return false;
        }
        let path = match path.strip_prefix("~/").zip(std::env::var_os("HOME")) {
            Some((rest, home)) => std::path::Path::new(&home).join(rest),
            None => std::path::PathBuf::from(path),
        };
        let file = match crate::commands::files::read_for_sending(&path, None) {
            Ok(file) => file,
            Err(e) => {
                self.tell(&format!("{e:#}"), true);
                return false;
            }
        };
        let sent = daemon.send_file(&name, file);
        self.after_send(sent)
    }

    fn command(&mut self, command: &str, daemon: &mut dyn Daemon) -> bool {
        let (verb, argument) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        let argument = argument.trim();
        match verb {
            "quit" | "q" => {
                self.quit = true;
                true
            }
            "help" => {
                self.tell(&format!("commands: {COMMANDS}"), false);
                true
            }
            "accept" | "reject" | "block" => self.decide(verb, argument, daemon),
            "file" => self.send_file(argument, daemon),
            _ => {
                self.tell(&format!("there is no command /{verb}; commands: {COMMANDS}"), true);
                false
            }
        }
    }

    /// `/accept NAME`, `/reject`, `/block` on the selected request.
    fn decide(&mut self, verb: &str, name: &str, daemon: &mut dyn Daemon) -> bool {
        let Some(request) = self.selected_request() else {
            self.tell(
                &format!("/{verb} acts on a contact request: select one in the list first (Tab)"),
                true,
            );
            return false;
        };
        let id = request.id.clone();
        let result = match verb {
            "accept" if name.is_empty() => {
                self.tell("/accept needs the name to give them, e.g. /accept carol", true);
                return false;
            }
            "accept" => daemon.accept(&id, name).map(|stored| {
                self.selection = Selection::Contact(stored.clone());
                format!("{stored} is now a contact; compare your safety numbers with merpati contact show {stored}")
            }),
            "reject" => daemon.reject(&id).map(|()| format!("the request {id} was deleted")),
            _ => daemon.block(&id).map(|()| format!("{id} is blocked: nothing they send is kept")),
        };
        match result {
            Ok(said) => {
                self.reload(daemon);
                self.tell(&said, false);
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    fn tell(&mut self, text: &str, error: bool) {
        self.notice = Some(Notice { text: text.to_owned(), error });
    }

    /// A call that failed is told below the conversation; whether the daemon is reachable is
    /// the link's to say (one refused call, say at the daemon's connection cap, is not an outage).
    fn fail(&mut self, error: &ClientError) {
        self.tell(&error.to_string(), true);
    }
}

#[cfg(test)]
mod tests;
