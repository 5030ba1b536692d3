//! `merpati chat` for real: the full-screen client runs in a pseudo-terminal against real
//! daemons, keys are typed into it, and the screen is read back through a terminal emulator.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use merpati_e2e::{Node, bins, wait_until};
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const ROWS: u16 = 30;
const COLS: u16 = 120;

/// Keys as a terminal sends them.
const ENTER: &str = "\r";
const NEW_LINE: &str = "\n"; // Ctrl+J
const TAB: &str = "\t";
const PAGE_UP: &str = "\x1b[5~";
const CTRL_C: &str = "\x03";

/// `merpati chat` in a pseudo-terminal, with what it drew kept in a terminal emulator.
struct Chat {
    child: Box<dyn Child + Send + Sync>,
    keys: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    _master: Box<dyn MasterPty + Send>,
}

impl Chat {
    fn open(node: &Node, args: &[&str]) -> Chat {
        let size = PtySize { rows: ROWS, cols: COLS, pixel_width: 0, pixel_height: 0 };
        let pty = native_pty_system().openpty(size).unwrap();
        let mut command = CommandBuilder::new(&bins().merpati);
        command.arg("--home");
        command.arg(node.home());
        command.arg("chat");
        for arg in args {
            command.arg(arg);
        }
        command.cwd(node.home());
        command.env("TERM", "xterm-256color");
        let child = pty.slave.spawn_command(command).unwrap();
        drop(pty.slave);
        let mut output = pty.master.try_clone_reader().unwrap();
        let keys = pty.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            NonZeroU16::new(ROWS).unwrap(),
            NonZeroU16::new(COLS).unwrap(),
            0,
        )));
        let parser = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buffer = [0; 8192];
            while let Ok(n @ 1..) = output.read(&mut buffer) {
                parser.lock().unwrap().process(&buffer[..n]);
            }
        });
        Chat { child, keys, screen, _master: pty.master }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn shows(&self, what: &str) -> bool {
        self.contents().contains(what)
    }

    /// Waits until the screen shows `what`; on timeout, fails with the screen as it is.
    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.shows(what) {
            assert!(
                Instant::now() < deadline,
                "the chat never showed {what:?}; the screen:\n{}",
                self.contents()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the conversation list (the left quarter of the screen) shows `name` with
    /// `count` unread beside it.
    fn wait_for_unread(&self, name: &str, count: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let contents = self.contents();
            let listed = contents.lines().any(|row| {
                let list: String =
                    row.chars().take(usize::from(COLS / 4)).map(|c| if c == '│' { ' ' } else { c }).collect();
                let words: Vec<&str> = list.split_whitespace().collect();
                words.windows(2).any(|pair| pair == [name, count])
            });
            if listed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the list never showed {name} {count}; the screen:\n{contents}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `what` is no longer on the screen.
    fn wait_gone(&self, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.shows(what) {
            assert!(
                Instant::now() < deadline,
                "the chat kept showing {what:?}; the screen:\n{}",
                self.contents()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn press(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Quits with Ctrl+C and returns whether it exited cleanly.
    fn quit(mut self) -> bool {
        self.press(CTRL_C);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the chat did not quit on Ctrl+C:\n{}", self.contents());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The texts `node` received from `with`, read through the control API's `messages`, which
/// marks nothing read (`merpati messages NAME` would, and spoil what the chat is tested for).
fn incoming(node: &Node, with: &str) -> Vec<String> {
    let listed = node.rpc("messages", json!({"with": with, "limit": 1000}));
    listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn status_of(node: &Node, id: &str) -> String {
    node.message_status(id)["status"].as_str().unwrap().to_owned()
}

/// Three users with running daemons; Alice holds Bob and Carol as contacts and they hold her.
fn three() -> (Node, Node, Node) {
    let mut nodes = [Node::init("Alice"), Node::init("Bob"), Node::init("Carol")];
    for node in &mut nodes {
        node.start();
    }
    let [alice, bob, carol] = nodes;
    for (other, name) in [(&bob, "bob"), (&carol, "carol")] {
        alice.add(other, name);
        other.add(&alice, "alice");
    }
    (alice, bob, carol)
}

#[test]
fn chatting_live_reading_ticks_and_a_daemon_restart() {
    let (mut alice, bob, carol) = three();
    let early = bob.send("alice", "sent before the chat opened");
    wait_until("bob's first message at alice", PATIENCE, || incoming(&alice, "bob").len() == 1);

    let mut chat = Chat::open(&alice, &["bob"]);
    chat.wait_for("Merpati · Alice");
    chat.wait_for("sent before the chat opened");
    // On screen is read, and the sender sees it.
    wait_until("bob's message read", PATIENCE, || status_of(&bob, &early) == "read");

    // A text typed and sent shows at once and ticks along to delivered.
    chat.press("hi bob, from the chat");
    chat.press(ENTER);
    wait_until("the chat's text at bob", PATIENCE, || incoming(&bob, "alice") == ["hi bob, from the chat"]);
    chat.wait_for("you  hi bob, from the chat  ✓✓ delivered");

    // Several lines in one message.
    chat.press("first line");
    chat.press(NEW_LINE);
    chat.press("second line");
    chat.press(ENTER);
    wait_until("the two-line text at bob", PATIENCE, || incoming(&bob, "alice").len() == 2);
    assert_eq!(incoming(&bob, "alice")[1], "first line\nsecond line");

    // What arrives in the open conversation shows live and is read.
    let live = bob.send("alice", "a live reply");
    chat.wait_for("a live reply");
    wait_until("the live reply read", PATIENCE, || status_of(&bob, &live) == "read");

    // Elsewhere it is counted on the left, and opening the conversation reads it.
    let psst = carol.send("alice", "psst, it's carol");
    wait_until("carol's message at alice", PATIENCE, || incoming(&alice, "carol").len() == 1);
    chat.wait_for_unread("carol", "1");
    // Delivered (its receipt may still be on its way), and not read: it is not on screen.
    wait_until("carol's message delivered, not read", PATIENCE, || status_of(&carol, &psst) == "delivered");
    chat.press(TAB);
    chat.wait_for("psst, it's carol");
    wait_until("carol's message read", PATIENCE, || status_of(&carol, &psst) == "read");
    chat.press(TAB);
    chat.wait_for("a live reply");

    // The daemon goes away: the chat says so, keeps what is typed, and comes back with it.
    alice.stop();
    chat.wait_for("reconnecting");
    chat.press("typed while the daemon was down");
    alice.start();
    chat.wait_gone("reconnecting");
    chat.press(ENTER);
    wait_until("the text typed while down at bob", PATIENCE, || incoming(&bob, "alice").len() == 3);
    assert_eq!(incoming(&bob, "alice")[2], "typed while the daemon was down");
    assert!(chat.quit(), "Ctrl+C leaves with exit 0");
}

#[test]
fn scrolling_back_through_history_and_accepting_a_request() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    let mut dave = Node::init("Dave");
    alice.start();
    bob.start();
    dave.start();
    alice.add(&bob, "bob");
    bob.add(&alice, "alice");
    // More than the chat's first page, so scrolling to the start must read older pages.
    let total = 450;
    for i in 0..total {
        bob.rpc("send", json!({"to": "alice", "text": format!("old message {i:04}")}));
    }
    wait_until("bob's history at alice", Duration::from_secs(180), || {
        alice.rpc("messages", json!({"with": "bob", "limit": 1}))["messages"][0]["text"]
            == format!("old message {:04}", total - 1)
    });
    // Dave holds Alice's invite, she does not hold his: his first text is a request.
    dave.add(&alice, "alice");
    let hello = dave.send("alice", "hello, it is dave from the shop");
    wait_until("dave's request", PATIENCE, || {
        alice.rpc("requests", json!({}))["requests"].as_array().is_some_and(|r| r.len() == 1)
    });

    let mut chat = Chat::open(&alice, &[]);
    chat.wait_for(&format!("old message {:04}", total - 1));
    chat.wait_for("Requests (1)");
    let deadline = Instant::now() + PATIENCE;
    while !chat.shows("old message 0000") {
        assert!(Instant::now() < deadline, "never scrolled back to the first message:\n{}", chat.contents());
        chat.press(PAGE_UP);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!chat.shows("PgUp for older"), "the start of the conversation is reached");

    // The request: its first words, then accepted from the input line.
    chat.press(TAB);
    chat.wait_for("hello, it is dave from the shop");
    chat.wait_for("Contact request");
    chat.press("/accept dave");
    chat.press(ENTER);
    chat.wait_for("dave is now a contact");
    chat.wait_for("message to dave");
    wait_until("dave's first text read", PATIENCE, || status_of(&dave, &hello) == "read");
    let contacts: Value = alice.rpc("contact.list", json!({}));
    assert!(contacts["contacts"].as_array().unwrap().iter().any(|c| c["name"] == "dave"));
    assert!(chat.quit());
}
