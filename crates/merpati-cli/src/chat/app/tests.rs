//! The chat screen's logic against a fake daemon: what opens, what is marked read, what paging
//! loads, what a failed send keeps, and which conversation a group's message belongs to. The real
//! daemon and terminal are in `tests/chat.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use merpati_control::protocol::{
    GroupMemberView, GroupRole, MessageGroup, MessageId, MessageStatus, RequestView, RestoredNotice,
    StatusUpdate, StoredCount,
};
use merpati_proto::Timestamp;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::commands::files::FileToSend;

/// Conversations in memory, and a record of what the screen asked for.
#[derive(Default)]
struct Fake {
    contacts: Vec<ContactSummary>,
    groups: Vec<GroupView>,
    requests: Vec<RequestView>,
    conversations: BTreeMap<String, Vec<MessageView>>,
    /// Groups' messages, by group id.
    group_conversations: BTreeMap<String, Vec<MessageView>>,
    sent: Vec<(String, String)>,
    /// Texts sent to groups, by group id.
    sent_to_groups: Vec<(String, String)>,
    marked_read: Vec<String>,
    /// Groups marked read, by id.
    groups_read: Vec<String>,
    pages_read: usize,
    down: bool,
}

fn id(n: u64) -> MessageId {
    let mut bytes = [0; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    MessageId::from_bytes(bytes)
}

fn message(n: u64, contact: &str, direction: Direction, text: &str) -> MessageView {
    MessageView {
        id: id(n),
        direction,
        contact: contact.into(),
        time: Timestamp(1_763_748_220_000 + n * 1000),
        text: text.into(),
        status: (direction == Direction::Out).then_some(MessageStatus::Queued),
        stored: None,
        reason: None,
        seq: None,
        file: None,
        group: None,
    }
}

fn contact(name: &str, unread: u64) -> ContactSummary {
    ContactSummary {
        name: name.into(),
        fingerprint: "ab".into(),
        connected: true,
        last_heard: None,
        unread,
        restored_at: None,
    }
}

impl Fake {
    fn with(conversations: &[(&str, usize)]) -> Fake {
        let mut fake = Fake::default();
        let mut n = 0;
        for &(name, count) in conversations {
            fake.contacts.push(contact(name, 0));
            let messages = (0..count)
                .map(|i| {
                    n += 1;
                    message(n, name, Direction::In, &format!("{name} #{i}"))
                })
                .collect();
            fake.conversations.insert(name.into(), messages);
        }
        fake
    }

    fn gone(&self) -> Result<(), ClientError> {
        if self.down {
            Err(ClientError::DaemonNotRunning { socket: PathBuf::from("/h/control.sock") })
        } else {
            Ok(())
        }
    }
}

impl Daemon for Fake {
    fn own_name(&mut self) -> Result<Option<String>, ClientError> {
        self.gone()?;
        Ok(Some("alice".into()))
    }

    fn contacts(&mut self) -> Result<Vec<ContactSummary>, ClientError> {
        self.gone()?;
        Ok(self.contacts.clone())
    }

    fn groups(&mut self) -> Result<Vec<GroupView>, ClientError> {
        self.gone()?;
        Ok(self.groups.clone())
    }

    fn requests(&mut self) -> Result<Vec<RequestView>, ClientError> {
        self.gone()?;
        Ok(self.requests.clone())
    }

    fn messages(
        &mut self,
        with: &With,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<MessageView>, bool), ClientError> {
        self.gone()?;
        self.pages_read += 1;
        let all = match with {
            With::Contact(name) => self.conversations.get(name),
            With::Group { id, .. } => self.group_conversations.get(id),
        };
        let all = all.cloned().unwrap_or_default();
        let end = before.and_then(|b| all.iter().position(|m| m.id == b)).unwrap_or(all.len());
        // Like the daemon, a page with long texts (here: over 100 bytes) is cut after the newest.
        let page = &all[end.saturating_sub(limit as usize)..end];
        match page.iter().rposition(|m| m.text.len() > 100) {
            Some(long) if long > 0 => Ok((page[long..].to_vec(), true)),
            _ => Ok((page.to_vec(), false)),
        }
    }

    fn send(&mut self, contact: &str, text: &str) -> Result<MessageId, ClientError> {
        self.gone()?;
        if text.len() > 100 {
            return Err(ClientError::Remote { code: 3, message: "the text is too long".into(), data: None });
        }
        self.sent.push((contact.into(), text.into()));
        Ok(id(1_000_000 + self.sent.len() as u64))
    }

    fn send_group(&mut self, group: &str, text: &str) -> Result<MessageId, ClientError> {
        self.gone()?;
        let Some(view) = self.groups.iter().find(|g| g.id == group) else {
            return Err(ClientError::Remote { code: 17, message: "unknown group".into(), data: None });
        };
        // What the daemon answers once we left or were removed.
        if view.role.is_none() {
            let message = format!("you are not a member of \"{}\"", view.name);
            return Err(ClientError::Remote { code: 18, message, data: None });
        }
        self.sent_to_groups.push((group.into(), text.into()));
        Ok(id(3_000_000 + self.sent_to_groups.len() as u64))
    }

    fn send_file(&mut self, contact: &str, file: FileToSend) -> Result<MessageId, ClientError> {
        self.gone()?;
        self.sent.push((contact.into(), format!("file {}", file.name)));
        Ok(id(2_000_000 + self.sent.len() as u64))
    }

    fn mark_read(&mut self, contact: &str) -> Result<(), ClientError> {
        self.gone()?;
        self.marked_read.push(contact.into());
        Ok(())
    }

    fn mark_group_read(&mut self, group: &str) -> Result<(), ClientError> {
        self.gone()?;
        self.groups_read.push(group.into());
        Ok(())
    }

    fn accept(&mut self, id: &str, name: &str) -> Result<String, ClientError> {
        self.gone()?;
        self.requests.retain(|r| r.id != id);
        self.contacts.push(contact(name, 0));
        Ok(name.into())
    }

    fn reject(&mut self, id: &str) -> Result<(), ClientError> {
        self.gone()?;
        self.requests.retain(|r| r.id != id);
        Ok(())
    }

    fn block(&mut self, id: &str) -> Result<(), ClientError> {
        self.reject(id)
    }
}

fn press(app: &mut App, fake: &mut Fake, code: KeyCode) {
    app.key(KeyEvent::new(code, KeyModifiers::NONE), fake);
}

fn type_text(app: &mut App, fake: &mut Fake, text: &str) {
    for c in text.chars() {
        press(app, fake, KeyCode::Char(c));
    }
}

fn started(fake: &mut Fake) -> App {
    let mut app = App::new(None);
    app.update(Update::Connected, fake);
    app
}

fn shown(app: &App) -> Vec<String> {
    app.conversation.as_ref().map(|c| c.messages.iter().map(|m| m.text.clone()).collect()).unwrap_or_default()
}

#[test]
fn the_first_conversation_opens_with_its_newest_page_and_is_marked_read() {
    let mut fake = Fake::with(&[("bob", 3), ("carol", 1)]);
    fake.contacts[0].unread = 2;
    let app = started(&mut fake);
    assert_eq!(app.own_name.as_deref(), Some("alice"));
    assert_eq!(app.selection, Selection::Contact("bob".into()));
    assert_eq!(shown(&app), ["bob #0", "bob #1", "bob #2"]);
    assert_eq!(fake.marked_read, ["bob"]);
    assert_eq!(app.contacts[0].unread, 0);
    assert_eq!(app.link, LinkState::Up);
}

#[test]
fn a_conversation_named_on_the_command_line_opens_first() {
    let mut fake = Fake::with(&[("bob", 1), ("carol", 1)]);
    let mut app = App::new(Some("carol".into()));
    app.update(Update::Connected, &mut fake);
    assert_eq!(shown(&app), ["carol #0"]);
}

#[test]
fn what_arrives_on_screen_is_read_and_elsewhere_is_counted() {
    let mut fake = Fake::with(&[("bob", 1), ("carol", 1)]);
    let mut app = started(&mut fake);
    fake.marked_read.clear();
    app.update(Update::Event(Box::new(Event::Message(message(50, "bob", Direction::In, "live")))), &mut fake);
    assert_eq!(shown(&app).last().map(String::as_str), Some("live"));
    assert_eq!(fake.marked_read, ["bob"], "on screen: read at once");
    app.update(
        Update::Event(Box::new(Event::Message(message(51, "carol", Direction::In, "psst")))),
        &mut fake,
    );
    assert_eq!(app.contacts[1].unread, 1, "another conversation counts it");
    assert_eq!(fake.marked_read, ["bob"]);
    // The same announcement twice shows once.
    app.update(Update::Event(Box::new(Event::Message(message(50, "bob", Direction::In, "live")))), &mut fake);
    assert_eq!(shown(&app).iter().filter(|t| *t == "live").count(), 1);
    // Opening carol reads it.
    fake.conversations.entry("carol".into()).or_default().push(message(51, "carol", Direction::In, "psst"));
    press(&mut app, &mut fake, KeyCode::Tab);
    assert_eq!(shown(&app), ["carol #0", "psst"]);
    assert_eq!(app.contacts[1].unread, 0);
    assert_eq!(fake.marked_read, ["bob", "carol"]);
}

#[test]
fn what_arrives_while_the_terminal_is_in_the_background_waits_until_it_is_back() {
    let mut fake = Fake::with(&[("bob", 1)]);
    let mut app = started(&mut fake);
    fake.marked_read.clear();
    app.focus(false, &mut fake);
    app.update(
        Update::Event(Box::new(Event::Message(message(60, "bob", Direction::In, "still there?")))),
        &mut fake,
    );
    assert!(fake.marked_read.is_empty(), "in the background: not read");
    assert_eq!(app.contacts[0].unread, 1);
    app.focus(true, &mut fake);
    assert_eq!(fake.marked_read, ["bob"]);
    assert_eq!(app.contacts[0].unread, 0);
}

#[test]
fn one_failed_call_is_news_not_an_outage() {
    let mut fake = Fake::with(&[("bob", 1)]);
    let mut app = started(&mut fake);
    fake.down = true;
    type_text(&mut app, &mut fake, "hi");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(app.link, LinkState::Up, "only the link says the daemon is gone");
    assert!(app.notice.as_ref().is_some_and(|n| n.error));
}

#[test]
fn scrolled_back_is_not_read_until_the_view_comes_down_again() {
    let mut fake = Fake::with(&[("bob", 60)]);
    let mut app = started(&mut fake);
    fake.marked_read.clear();
    press(&mut app, &mut fake, KeyCode::PageUp);
    assert!(app.conversation.as_ref().is_some_and(|c| c.scroll > 0));
    app.update(
        Update::Event(Box::new(Event::Message(message(500, "bob", Direction::In, "while away")))),
        &mut fake,
    );
    assert!(fake.marked_read.is_empty(), "not on screen, not read");
    assert_eq!(app.contacts[0].unread, 1);
    press(&mut app, &mut fake, KeyCode::PageDown);
    press(&mut app, &mut fake, KeyCode::PageDown);
    assert_eq!(app.conversation.as_ref().map(|c| c.scroll), Some(0));
    assert_eq!(fake.marked_read, ["bob"]);
    assert_eq!(app.contacts[0].unread, 0);
}

#[test]
fn scrolling_up_pages_back_through_the_whole_history() {
    let total = PAGE as usize * 2 + 50;
    let mut fake = Fake::with(&[("bob", total)]);
    let mut app = started(&mut fake);
    assert_eq!(shown(&app).len(), PAGE as usize);
    for _ in 0..total {
        press(&mut app, &mut fake, KeyCode::PageUp);
    }
    let conversation = app.conversation.as_ref().expect("open");
    assert!(conversation.complete);
    assert_eq!(conversation.messages.len(), total);
    assert_eq!(shown(&app)[0], "bob #0");
    assert_eq!(fake.pages_read, 3, "three pages, the last one short");
    // At the top the view holds still.
    let top = conversation.scroll;
    press(&mut app, &mut fake, KeyCode::PageUp);
    assert_eq!(app.conversation.as_ref().map(|c| c.scroll), Some(top));
    assert!(top > 0);
}

#[test]
fn a_page_cut_short_by_long_texts_is_not_the_start_of_the_history() {
    let mut fake = Fake::with(&[("bob", 10)]);
    let long = "x".repeat(500);
    let conversation = fake.conversations.entry("bob".into()).or_default();
    conversation[3].text = long.clone();
    conversation[7].text = long;
    let mut app = started(&mut fake);
    assert_eq!(shown(&app).len(), 3, "the daemon cut the page after the newest long text");
    assert!(!app.conversation.as_ref().expect("open").complete, "older messages may follow");
    for _ in 0..20 {
        press(&mut app, &mut fake, KeyCode::PageUp);
    }
    assert_eq!(shown(&app).len(), 10, "every page read, down to the first message");
    assert!(app.conversation.as_ref().expect("open").complete);
}

#[test]
fn enter_sends_alt_enter_breaks_the_line_and_a_failed_send_keeps_the_text() {
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    type_text(&mut app, &mut fake, "line one");
    app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT), &mut fake);
    type_text(&mut app, &mut fake, "line two");
    app.key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL), &mut fake);
    type_text(&mut app, &mut fake, "three");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent, [("bob".to_owned(), "line one\nline two\nthree".to_owned())]);
    assert!(app.input.is_empty());

    let long = "x".repeat(101);
    app.paste(&long);
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent.len(), 1);
    assert_eq!(app.input.text(), long, "nothing typed is lost");
    assert_eq!(app.notice.as_ref().map(|n| (n.text.as_str(), n.error)), Some(("the text is too long", true)));

    app.input.take();
    press(&mut app, &mut fake, KeyCode::Enter);
    type_text(&mut app, &mut fake, "   ");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent.len(), 1, "blank input sends nothing");
    app.input.take();
    type_text(&mut app, &mut fake, "//etc/hosts is a path");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent[1].1, "/etc/hosts is a path");
}

#[test]
fn statuses_tick_along_on_screen() {
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    app.update(Update::Event(Box::new(Event::Message(message(7, "bob", Direction::Out, "hi")))), &mut fake);
    let stored = Some(StoredCount { accepted: 1, total: 2 });
    let update = StatusUpdate { id: id(7), status: MessageStatus::Stored, reason: None, stored };
    app.update(Update::Event(Box::new(Event::Status(update))), &mut fake);
    let message = &app.conversation.as_ref().expect("open").messages[0];
    assert_eq!((message.status, message.stored), (Some(MessageStatus::Stored), stored));
    assert!(fake.marked_read.is_empty(), "an own message is nothing to mark read");
}

/// The laid-out lines are kept between draws, and laid out again whenever what they show moved:
/// a status, a new message, an older page, another width.
#[test]
fn what_is_drawn_follows_every_change() {
    let mut fake = Fake::with(&[("bob", PAGE as usize + 1)]);
    let mut app = started(&mut fake);
    let shown = |app: &mut App, width| -> String {
        let lines = app.conversation.as_mut().expect("open").lines(width);
        lines.iter().flat_map(|l| l.spans.iter().map(|s| s.content.to_string())).collect()
    };
    app.update(
        Update::Event(Box::new(Event::Message(message(7_000, "bob", Direction::Out, "hi")))),
        &mut fake,
    );
    assert!(shown(&mut app, 80).contains("hi  ○ queued"));
    let update = StatusUpdate { id: id(7_000), status: MessageStatus::Delivered, reason: None, stored: None };
    app.update(Update::Event(Box::new(Event::Status(update))), &mut fake);
    assert!(shown(&mut app, 80).contains("hi  ✓✓ delivered"));
    app.update(
        Update::Event(Box::new(Event::Message(message(7_001, "bob", Direction::In, "and you?")))),
        &mut fake,
    );
    assert!(shown(&mut app, 80).contains("and you?"));
    assert!(!shown(&mut app, 80).contains("bob #0"), "the oldest is not loaded yet");
    for _ in 0..PAGE {
        press(&mut app, &mut fake, KeyCode::PageUp);
    }
    assert!(shown(&mut app, 80).contains("bob #0"), "the older page is drawn");
    let narrow = app.conversation.as_mut().expect("open").lines(20).len();
    let wide = app.conversation.as_mut().expect("open").lines(80).len();
    assert!(narrow > wide, "another width, another layout");
}

fn request(id: &str) -> RequestView {
    RequestView {
        id: id.into(),
        fingerprint: "cd".into(),
        suggested_name: Some("carol".into()),
        preview: Some("hi, it's carol".into()),
        envelopes: 1,
        dropped: 0,
        first_at: Timestamp(1),
        last_at: Timestamp(1),
    }
}

#[test]
fn a_request_is_accepted_rejected_or_blocked_from_the_input_line() {
    let mut fake = Fake::with(&[("bob", 1)]);
    fake.requests = vec![request("0123456789abcdef"), request("fedcba9876543210")];
    let mut app = started(&mut fake);
    type_text(&mut app, &mut fake, "/accept carol");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(
        app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("select one")),
        "{:?}",
        app.notice
    );
    assert_eq!(fake.requests.len(), 2, "a refused command changes nothing");
    app.input.take();

    press(&mut app, &mut fake, KeyCode::Tab);
    assert_eq!(app.selected_request().map(|r| r.id.as_str()), Some("0123456789abcdef"));
    type_text(&mut app, &mut fake, "hello?");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(fake.sent.is_empty(), "no text goes to a request");
    app.input.take();
    type_text(&mut app, &mut fake, "/accept");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(app.notice.as_ref().is_some_and(|n| n.text.contains("needs the name")));
    type_text(&mut app, &mut fake, " carol");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(app.selection, Selection::Contact("carol".into()));
    assert_eq!(app.requests.len(), 1);
    assert!(app.input.is_empty());

    app.selection = Selection::Request("fedcba9876543210".into());
    type_text(&mut app, &mut fake, "/block");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(app.requests.is_empty());
    type_text(&mut app, &mut fake, "/frobnicate");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("no command /frobnicate")));
}

#[test]
fn a_lost_daemon_is_shown_and_its_return_reloads_everything() {
    let mut fake = Fake::with(&[("bob", 1)]);
    let mut app = started(&mut fake);
    app.update(Update::Lost("merpatid closed the connection".into()), &mut fake);
    assert!(matches!(app.link, LinkState::Down(_)));
    fake.down = true;
    type_text(&mut app, &mut fake, "are you there");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(app.input.text(), "are you there", "kept while the daemon is away");
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("not running")));
    fake.down = false;
    fake.conversations.entry("bob".into()).or_default().push(message(90, "bob", Direction::In, "missed"));
    app.update(Update::Connected, &mut fake);
    assert_eq!(app.link, LinkState::Up);
    assert_eq!(app.notice, None, "the error from while it was away is cleared");
    assert_eq!(shown(&app), ["bob #0", "missed"], "what came while away is read afresh");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent, [("bob".to_owned(), "are you there".to_owned())]);
}

#[test]
fn a_file_goes_with_slash_file_and_a_bad_one_is_explained() {
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    let dir = tempfile::tempdir().expect("dir");
    let note = dir.path().join("note.txt");
    std::fs::write(&note, b"see you at 6").expect("write");
    type_text(&mut app, &mut fake, &format!("/file {}", note.display()));
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent, [("bob".to_owned(), "file note.txt".to_owned())]);
    assert!(app.input.is_empty());
    // A larger file goes by its path, for the daemon to read.
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, vec![0u8; 100 * 1024]).expect("write");
    type_text(&mut app, &mut fake, &format!("/file {}", photo.display()));
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent.len(), 2);
    assert_eq!(fake.sent[1], ("bob".to_owned(), "file photo.jpg".to_owned()));
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big).expect("create").set_len(26 * 1024 * 1024).expect("size");
    type_text(&mut app, &mut fake, &format!("/file {}", big.display()));
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent.len(), 2);
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("25 MiB")), "{:?}", app.notice);
    assert!(!app.input.is_empty(), "the command stays to be corrected");
}

#[test]
fn quitting() {
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    type_text(&mut app, &mut fake, "draft");
    app.key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL), &mut fake);
    assert!(!app.quit, "Ctrl+D quits only with nothing typed");
    app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &mut fake);
    assert!(app.quit);
    let mut app = started(&mut fake);
    type_text(&mut app, &mut fake, "/quit");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(app.quit);
}

#[test]
fn a_file_on_the_move_shows_how_far_it_is_and_then_that_it_is_here() {
    use merpati_control::protocol::{FileView, TransferDirection, TransferUpdate};
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    let mut photo = message(5, "bob", Direction::In, "the view");
    photo.file = Some(FileView {
        name: "view.jpg".into(),
        media_type: "image/jpeg".into(),
        size: 4 * 1_048_576,
        here: false,
        failed: None,
    });
    app.update(Update::Event(Box::new(Event::Message(photo.clone()))), &mut fake);
    let text = |app: &mut App| -> String {
        let lines = app.conversation.as_mut().expect("open").lines(80);
        lines.iter().map(|line| line.spans.iter().map(|s| s.content.as_ref()).collect::<String>()).collect()
    };
    assert!(text(&mut app).contains("[file view.jpg, 4.0 MiB, not on this device]"), "{}", text(&mut app));
    let update = TransferUpdate {
        id: photo.id.clone(),
        direction: TransferDirection::Down,
        done: 1_048_576,
        size: 4 * 1_048_576,
        waiting: None,
    };
    app.update(Update::Event(Box::new(Event::Transfer(update))), &mut fake);
    assert!(text(&mut app).contains("[file view.jpg, 4.0 MiB, fetching 25%]"), "{}", text(&mut app));
    // The daemon announces the message again once the file is here: it replaces the one shown.
    photo.file.as_mut().expect("file").here = true;
    app.update(Update::Event(Box::new(Event::Message(photo))), &mut fake);
    assert!(text(&mut app).contains("[file view.jpg, 4.0 MiB] the view"), "{}", text(&mut app));
    assert_eq!(shown(&app).iter().filter(|t| *t == "the view").count(), 1, "shown once");
}

#[test]
fn a_contact_restored_from_a_backup_is_told() {
    let mut fake = Fake::with(&[("bob", 0)]);
    let mut app = started(&mut fake);
    let notice = RestoredNotice { contact: "bob\u{1b}[2J".into(), at: 5 };
    app.update(Update::Event(Box::new(Event::Restored(notice))), &mut fake);
    let told = app.notice.as_ref().expect("a notice");
    assert!(!told.error);
    assert!(told.text.starts_with("bob\\u{1b}[2J restored from a backup"), "{}", told.text);
}

const KELUARGA: &str = "6038985f00112233445566778899aabb";
const KERJA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn member(name: &str, me: bool) -> GroupMemberView {
    GroupMemberView {
        name: name.into(),
        contact: (!me).then(|| name.into()),
        fingerprint: "ef".into(),
        role: GroupRole::Member,
        owner: false,
        me,
    }
}

fn group(id: &str, name: &str, unread: u32) -> GroupView {
    GroupView {
        id: id.into(),
        name: name.into(),
        role: Some(GroupRole::Member),
        members: vec![member("you", true), member("bob", false), member("dewi", false)],
        unread,
        missing: Vec::new(),
    }
}

/// A message of a group as the daemon lists and announces it: `contact` is the group's name.
fn group_message(n: u64, id: &str, name: &str, from: Option<&str>, text: &str) -> MessageView {
    let direction = if from.is_some() { Direction::In } else { Direction::Out };
    let mut message = message(n, name, direction, text);
    let out = direction == Direction::Out;
    message.group = Some(MessageGroup {
        id: id.into(),
        name: name.into(),
        from: from.map(Into::into),
        delivered: out.then_some(0),
        members: out.then_some(2),
        read: None,
    });
    message
}

fn live(app: &mut App, fake: &mut Fake, message: MessageView) {
    app.update(Update::Event(Box::new(Event::Message(message))), fake);
}

fn screen(app: &mut App) -> String {
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 20)).expect("a test terminal");
    terminal.draw(|frame| crate::chat::view::draw(frame, app)).expect("drawn");
    let buffer = terminal.backend().buffer();
    let width = usize::from(buffer.area.width);
    let cells: Vec<String> = buffer.content().iter().map(|cell| cell.symbol().to_owned()).collect();
    cells.chunks(width).map(|row| row.concat() + "\n").collect()
}

#[test]
fn groups_are_listed_after_the_contacts_with_their_unread_counts_and_open_like_them() {
    let mut fake = Fake::with(&[("bob", 1), ("carol", 1)]);
    fake.groups = vec![group(KELUARGA, "keluarga", 2), group(KERJA, "kerja", 0)];
    fake.group_conversations.insert(
        KELUARGA.into(),
        vec![
            group_message(20, KELUARGA, "keluarga", Some("dewi"), "makan malam jam 7"),
            group_message(21, KELUARGA, "keluarga", Some("bob"), "siap"),
        ],
    );
    fake.requests = vec![request("0123456789abcdef")];
    let mut app = started(&mut fake);
    assert_eq!(
        app.entries(),
        [
            Selection::Contact("bob".into()),
            Selection::Contact("carol".into()),
            Selection::Group(KELUARGA.into()),
            Selection::Group(KERJA.into()),
            Selection::Request("0123456789abcdef".into()),
        ]
    );
    let drawn = screen(&mut app);
    // The left pane's part of the row that names `name`.
    let row = |name: &str| {
        let line = drawn.lines().find(|l| l.contains(name)).unwrap_or_default();
        line.split('│').nth(1).unwrap_or_default().trim_end().to_owned()
    };
    assert!(row("#keluarga").ends_with(" 2"), "the unread count on its row:\n{drawn}");
    assert_eq!(row("#kerja"), "  #kerja", "nothing unread, no count:\n{drawn}");
    assert!(
        drawn.find("carol").zip(drawn.find("#keluarga")).is_some_and(|(c, g)| c < g),
        "groups after the contacts:\n{drawn}"
    );
    assert!(!drawn.contains("(none yet)"));

    press(&mut app, &mut fake, KeyCode::Tab);
    press(&mut app, &mut fake, KeyCode::Tab);
    assert_eq!(app.selection, Selection::Group(KELUARGA.into()));
    assert_eq!(shown(&app), ["makan malam jam 7", "siap"]);
    assert_eq!(
        app.conversation.as_ref().map(|c| c.with.clone()),
        Some(With::Group { id: KELUARGA.into(), name: "keluarga".into() })
    );
    assert_eq!(fake.groups_read, [KELUARGA], "opening a group reads it, by its id");
    assert_eq!(app.groups[0].unread, 0);
    assert!(screen(&mut app).contains("message to #keluarga"));

    // An empty group opens empty and has nothing to mark read; Shift+Tab goes back.
    press(&mut app, &mut fake, KeyCode::Tab);
    assert_eq!(app.selection, Selection::Group(KERJA.into()));
    assert!(shown(&app).is_empty());
    assert_eq!(fake.groups_read, [KELUARGA]);
    press(&mut app, &mut fake, KeyCode::BackTab);
    press(&mut app, &mut fake, KeyCode::BackTab);
    assert_eq!(app.selection, Selection::Contact("carol".into()));
    assert_eq!(shown(&app), ["carol #0"]);
}

#[test]
fn a_live_group_message_goes_to_its_group_not_to_a_contact_named_like_it() {
    // A contact named like the group: their messages carry the same `contact`.
    let mut fake = Fake::with(&[("keluarga", 1)]);
    fake.groups = vec![group(KELUARGA, "keluarga", 0)];
    let mut app = started(&mut fake);
    assert_eq!(app.selection, Selection::Contact("keluarga".into()));
    fake.marked_read.clear();

    live(&mut app, &mut fake, group_message(30, KELUARGA, "keluarga", Some("dewi"), "halo"));
    assert_eq!(shown(&app), ["keluarga #0"], "not in the contact's conversation");
    assert_eq!(app.groups[0].unread, 1, "counted for the group");
    assert_eq!(app.contacts[0].unread, 0);
    assert!(fake.marked_read.is_empty() && fake.groups_read.is_empty());

    fake.group_conversations
        .insert(KELUARGA.into(), vec![group_message(30, KELUARGA, "keluarga", Some("dewi"), "halo")]);
    press(&mut app, &mut fake, KeyCode::Tab);
    assert_eq!(shown(&app), ["halo"]);
    assert_eq!(fake.groups_read, [KELUARGA]);

    // The contact's own message does not land in the open group.
    live(&mut app, &mut fake, message(31, "keluarga", Direction::In, "just me"));
    assert_eq!(shown(&app), ["halo"]);
    assert_eq!(app.contacts[0].unread, 1);
    assert!(fake.marked_read.is_empty());
    // The group's next one shows at once and is read.
    live(&mut app, &mut fake, group_message(32, KELUARGA, "keluarga", Some("bob"), "sampai nanti"));
    assert_eq!(shown(&app), ["halo", "sampai nanti"]);
    assert_eq!(fake.groups_read, [KELUARGA, KELUARGA]);
    assert_eq!(app.groups[0].unread, 0);

    // A group we were just added to is listed, its message counted.
    fake.groups.push(group(KERJA, "kerja", 1));
    live(&mut app, &mut fake, group_message(33, KERJA, "kerja", Some("bob"), "rapat besok"));
    assert_eq!(app.groups.len(), 2);
    assert_eq!(app.groups[1].unread, 1);
    assert_eq!(shown(&app), ["halo", "sampai nanti"]);
}

#[test]
fn enter_in_a_group_sends_to_the_group_and_a_refusal_keeps_the_text() {
    let mut fake = Fake::with(&[("bob", 0)]);
    fake.groups = vec![group(KELUARGA, "keluarga", 0)];
    let mut app = started(&mut fake);
    press(&mut app, &mut fake, KeyCode::Tab);
    type_text(&mut app, &mut fake, "halo semua");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(fake.sent_to_groups, [(KELUARGA.to_owned(), "halo semua".to_owned())]);
    assert!(fake.sent.is_empty(), "nothing to a contact");
    assert!(app.input.is_empty());

    // Files do not go to groups: said, and the command kept.
    type_text(&mut app, &mut fake, "/file /etc/hostname");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert!(
        app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("cannot be sent to a group")),
        "{:?}",
        app.notice
    );
    assert_eq!(app.input.text(), "/file /etc/hostname");
    assert_eq!(fake.sent_to_groups.len(), 1);
    assert!(fake.sent.is_empty());
    app.input.take();

    // Once we left, the daemon refuses, and says why.
    fake.groups[0].role = None;
    app.reload(&mut fake);
    assert!(screen(&mut app).contains("#keluarga · you are not a member"));
    type_text(&mut app, &mut fake, "masih di sini?");
    press(&mut app, &mut fake, KeyCode::Enter);
    assert_eq!(
        app.notice.as_ref().map(|n| (n.text.as_str(), n.error)),
        Some(("you are not a member of \"keluarga\"", true))
    );
    assert_eq!(app.input.text(), "masih di sini?", "nothing typed is lost");
    assert_eq!(fake.sent_to_groups.len(), 1);
}

#[test]
fn in_a_group_the_sender_and_how_many_members_have_it_are_shown() {
    let mut fake = Fake::with(&[]);
    fake.groups = vec![group(KELUARGA, "keluarga", 0)];
    let mut sent = group_message(41, KELUARGA, "keluarga", None, "on my way");
    sent.status = Some(MessageStatus::Sent);
    if let Some(group) = &mut sent.group {
        group.delivered = Some(1);
    }
    let queued = group_message(42, KELUARGA, "keluarga", None, "wait");
    let mut failed = group_message(43, KELUARGA, "keluarga", None, "gone");
    failed.status = Some(MessageStatus::Failed);
    failed.reason = Some("no member has a contact here".into());
    fake.group_conversations.insert(
        KELUARGA.into(),
        vec![group_message(40, KELUARGA, "keluarga", Some("dewi"), "selamat pagi"), sent, queued, failed],
    );
    let mut app = started(&mut fake);
    let lines: Vec<String> = app
        .conversation
        .as_mut()
        .expect("open")
        .lines(80)
        .iter()
        .map(|line| line.spans.iter().map(|s| s.content.as_ref()).collect())
        .collect();
    assert!(lines[1].ends_with(" dewi  selamat pagi"), "the sender, not the group: {lines:?}");
    assert!(lines[2].ends_with(" you  on my way  delivered 1/2"), "{lines:?}");
    assert!(lines[3].ends_with(" you  wait  ○ delivered 0/2"), "{lines:?}");
    assert!(lines[4].ends_with(" you  gone  ✗ failed: no member has a contact here"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains('✓')), "no one-to-one ticks: {lines:?}");
}
