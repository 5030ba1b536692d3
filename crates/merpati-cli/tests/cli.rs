//! The real `merpati` binary against a temporary home: `init` without a daemon, every command
//! without a daemon, and the rest against a fake daemon (a test thread answering the control
//! socket with canned JSON-RPC lines). Checks stdout shapes, stderr sentences and exit codes.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use merpati_control::protocol::{
    AppError, ContactListResult, ContactShowResult, ContactSummary, Direction, Event, MessageStatus,
    MessageView, MessagesReadResult, MessagesResult, RelayListResult, RelayView, Request, Response,
    StatusResult, StatusUpdate, StoredCount, method, parse_request,
};
use merpati_proto::Timestamp;
use serde_json::{Value, json};

const ID: &str = "0123456789abcdef0123456789abcdef";
const RELAY: &str = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay";
const INVITE: &str = "MERPATI1:ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn merpati(home: &Path, args: &[&str]) -> Output {
    merpati_with_stdin(home, args, "")
}

fn merpati_with_stdin(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_merpati"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("MERPATI_HOME")
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap()
}

/// What the fake daemon does with one request: lines to write back, and whether to hang up.
type Handler = dyn Fn(&Request) -> (Vec<String>, bool) + Send + Sync;

/// Serves `<home>/control.sock`, one thread per connection, answering with `handler`.
fn fake_daemon(home: &Path, handler: impl Fn(&Request) -> (Vec<String>, bool) + Send + Sync + 'static) {
    let handler: Arc<Handler> = Arc::new(handler);
    let listener = UnixListener::bind(home.join("control.sock")).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let (lines, hang_up) = match parse_request(&line) {
                        Ok(request) => handler(&request),
                        Err(answer) => (vec![answer.to_line()], false),
                    };
                    for line in lines {
                        if writer.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                    }
                    if hang_up {
                        return;
                    }
                }
            });
        }
    });
}

fn ok(request: &Request, result: impl serde::Serialize) -> (Vec<String>, bool) {
    (vec![Response::ok(request.id.clone(), result).to_line()], false)
}

fn app_error(request: &Request, error: AppError, message: &str) -> (Vec<String>, bool) {
    (vec![Response::app_error(request.id.clone(), error, message, None).to_line()], false)
}

fn view(direction: Direction, text: &str, status: Option<MessageStatus>) -> MessageView {
    MessageView {
        id: ID.parse().unwrap(),
        direction,
        contact: "bob".into(),
        time: Timestamp(1_750_000_000_000),
        text: text.into(),
        status,
        stored: None,
        reason: None,
        seq: None,
        file: None,
        group: None,
    }
}

/// A daemon for the everyday commands; `send` to anyone but bob is an unknown contact.
fn everyday(request: &Request) -> (Vec<String>, bool) {
    match request.method.as_str() {
        "invite" => ok(request, json!({ "invite": INVITE })),
        "send" => {
            let params = request.params_of::<method::Send>().unwrap();
            if params.to != "bob" {
                return app_error(
                    request,
                    AppError::UnknownContact,
                    &format!("there is no contact named {}", params.to),
                );
            }
            if params.text.len() > 100 {
                return app_error(request, AppError::MessageTooLarge, "the message is too large");
            }
            // The text must arrive unchanged; a failed assertion drops the connection, and the
            // command then fails its test.
            assert!(params.text == "hello bob" || params.text == "from stdin", "{:?}", params.text);
            ok(request, json!({ "id": ID }))
        }
        "contact.add" => app_error(
            request,
            AppError::InvalidInvite,
            "the invite is mistyped or cut off: copy the whole line again",
        ),
        "contact.list" => ok(
            request,
            ContactListResult {
                contacts: vec![
                    ContactSummary {
                        name: "bob".into(),
                        fingerprint: "aaaa bbbb".into(),
                        connected: true,
                        last_heard: Some(1_795_219_200_000),
                        unread: 3,
                        restored_at: Some(1_795_219_100_000),
                    },
                    ContactSummary {
                        name: "carol".into(),
                        fingerprint: "cccc dddd".into(),
                        connected: false,
                        last_heard: None,
                        unread: 0,
                        restored_at: None,
                    },
                ],
            },
        ),
        "contact.show" if request.params_of::<method::ContactShow>().is_ok_and(|p| p.name == "bob") => ok(
            request,
            ContactShowResult {
                name: "bob".into(),
                fingerprint: "aaaa bbbb".into(),
                safety_number: "01234".into(),
                peer_id: String::new(),
                addrs: Vec::new(),
                missing: Vec::new(),
                last_heard: None,
                restored_at: None,
            },
        ),
        "contact.show" => app_error(request, AppError::UnknownContact, "there is no contact named dave"),
        "messages.read" => ok(request, MessagesReadResult { count: 1 }),
        "messages" => ok(
            request,
            MessagesResult {
                messages: vec![
                    view(Direction::Out, "hi bob", Some(MessageStatus::Delivered)),
                    MessageView {
                        id: "ffffffffffffffffffffffffffffffff".parse().unwrap(),
                        ..view(Direction::In, "hi\n\u{1b}[2Jyou", None)
                    },
                ],
                cut: false,
            },
        ),
        "status" => ok(
            request,
            StatusResult {
                peer_id: "12D3KooWtest".into(),
                listen: vec!["/ip4/127.0.0.1/tcp/4001".into()],
                connected: vec!["bob".into()],
                outbox: 1,
                fingerprint: "1111 2222".into(),
                name: Some("Alice".into()),
            },
        ),
        // A subscription on which nothing ever happens.
        "subscribe" => ok(request, json!({})),
        "message.status" => ok(request, json!({ "id": ID, "status": "queued" })),
        _ => (vec![request.method_not_found().to_line()], false),
    }
}

#[test]
fn init_creates_the_identity_and_refuses_a_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let first = merpati(&home, &["init", "--name", "Alice"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let out = stdout(&first);
    let fingerprint = out.lines().find_map(|l| l.strip_prefix("fingerprint: ")).unwrap().to_owned();
    assert_eq!(fingerprint.len(), 39, "{fingerprint}");
    assert!(out.contains(&format!("merpatid --home {}", home.display())), "{out}");

    let identity = home.join("identity");
    assert_eq!(std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
    let loaded = merpati_control::IdentityFile::load(&identity).unwrap();
    assert_eq!(loaded.fingerprint(), fingerprint);
    assert_eq!(loaded.name.as_deref(), Some("Alice"));

    let before = std::fs::read(&identity).unwrap();
    let second = merpati(&home, &["init"]);
    assert_eq!(code(&second), 1);
    assert!(stdout(&second).is_empty());
    let message = stderr(&second);
    assert!(message.contains("an identity already exists at") && message.contains("left alone"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(std::fs::read(&identity).unwrap(), before);
}

#[test]
fn init_json_and_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = merpati(tmp.path(), &["--json", "init"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let value: Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(value["fingerprint"].as_str().unwrap().len(), 39);
    assert_eq!(value["name"], Value::Null);
    assert_eq!(value["identity_file"], json!(tmp.path().join("identity")));

    let other = tempfile::tempdir().unwrap();
    let bad = merpati(other.path(), &["init", "--name", "a\u{7}b"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(!other.path().join("identity").exists());
}

#[test]
fn home_comes_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_merpati"))
        .arg("init")
        .env("MERPATI_HOME", tmp.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(tmp.path().join("identity").exists());

    // An empty MERPATI_HOME counts as unset: the platform data directory is used.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_merpati"))
        .arg("init")
        .env("MERPATI_HOME", "")
        .env("XDG_DATA_HOME", data.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(data.path().join("merpati/identity").exists());

    // --home wins over the environment.
    let explicit = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_merpati"))
        .args(["init", "--home"])
        .arg(explicit.path())
        .env("MERPATI_HOME", tmp.path().join("elsewhere"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(explicit.path().join("identity").exists());
}

#[test]
fn without_a_daemon_commands_exit_3_and_say_how_to_start_it() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(code(&merpati(tmp.path(), &["init"])), 0);
    let home = tmp.path().display().to_string();
    let expected =
        format!("merpati: merpatid is not running for {home} (start it with: merpatid --home {home})\n");
    for args in [
        &["status"][..],
        &["invite"],
        &["invite", "--qr"],
        &["contact", "add", INVITE, "--name", "bob"],
        &["contact", "list"],
        &["contact", "show", "bob"],
        &["send", "bob", "hello"],
        &["send", "bob", "hello", "--wait", "delivered"],
        &["messages"],
        &["messages", "bob", "--follow"],
        &["--json", "status"],
        &["relay", "add", RELAY],
        &["relay", "list"],
        &["relay", "remove", "12D3KooWrelay"],
    ] {
        let out = merpati(tmp.path(), args);
        assert_eq!(code(&out), 3, "{args:?}");
        assert_eq!(stderr(&out), expected, "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn an_uninitialised_home_exits_4_and_says_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = merpati(tmp.path(), &["status"]);
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("(create one with: merpati init --home"), "{}", stderr(&out));
}

#[test]
fn send_prints_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let out = merpati(tmp.path(), &["send", "bob", "hello bob"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{ID}\n"));

    let out = merpati_with_stdin(tmp.path(), &["--json", "send", "bob", "-"], "from stdin\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{{\"id\":\"{ID}\"}}\n"));
}

#[test]
fn unknown_contacts_exit_5() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let out = merpati(tmp.path(), &["send", "zed", "hello"]);
    assert_eq!(code(&out), 5);
    assert_eq!(stderr(&out), "merpati: there is no contact named zed\n");
    let out = merpati(tmp.path(), &["contact", "show", "dave"]);
    assert_eq!(code(&out), 5);
}

#[test]
fn an_invalid_invite_exits_6_with_the_daemons_message() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let out = merpati(tmp.path(), &["contact", "add", "MERPATI1:AAAA", "--name", "bob"]);
    assert_eq!(code(&out), 6);
    assert_eq!(stderr(&out), "merpati: the invite is mistyped or cut off: copy the whole line again\n");
    assert!(stdout(&out).is_empty());
}

#[test]
fn too_large_messages_exit_7() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let out = merpati(tmp.path(), &["send", "bob", &"x".repeat(200)]);
    assert_eq!(code(&out), 7);
    // Over the 1 MiB a text may hold, the client refuses before sending, naming the limit.
    let huge = "y".repeat(1024 * 1024 + 1);
    let out = merpati_with_stdin(tmp.path(), &["send", "bob", "-"], &huge);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("longer than 1048576 bytes"), "{}", stderr(&out));
    // Exactly 1 MiB with the newline a heredoc adds is not too long here (the newline is
    // dropped): it reaches the daemon, whose own answer this one is.
    let full = format!("{}\n", "y".repeat(1024 * 1024));
    let out = merpati_with_stdin(tmp.path(), &["send", "bob", "-"], &full);
    assert_eq!(stderr(&out), "merpati: the message is too large\n");
}

#[test]
fn invite_is_alone_on_the_last_line() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    for args in [&["invite"][..], &["invite", "--qr"]] {
        let out = merpati(tmp.path(), args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.lines().last(), Some(INVITE), "{text}");
    }
    let qr = stdout(&merpati(tmp.path(), &["invite", "--qr"]));
    assert!(qr.lines().count() > 10 && qr.contains('\u{2588}'), "{qr}");
    let json = stdout(&merpati(tmp.path(), &["--json", "invite", "--qr"]));
    assert_eq!(json, format!("{{\"invite\":\"{INVITE}\"}}\n"));
}

#[test]
fn json_output_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let lines = |args: &[&str]| -> Vec<Value> {
        let out = merpati(tmp.path(), args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };

    let contacts = lines(&["--json", "contact", "list"]);
    assert_eq!(
        contacts,
        vec![
            json!({"name": "bob", "fingerprint": "aaaa bbbb", "connected": true, "last_heard": 1_795_219_200_000u64, "unread": 3, "restored_at": 1_795_219_100_000u64}),
            json!({"name": "carol", "fingerprint": "cccc dddd", "connected": false, "unread": 0}),
        ]
    );

    let messages = lines(&["messages", "--json", "--limit", "5"]);
    assert_eq!(
        messages,
        vec![
            json!({"id": ID, "direction": "out", "contact": "bob", "time": 1_750_000_000_000u64, "text": "hi bob", "status": "delivered"}),
            json!({"id": "ffffffffffffffffffffffffffffffff", "direction": "in", "contact": "bob", "time": 1_750_000_000_000u64, "text": "hi\n\u{1b}[2Jyou"}),
        ]
    );

    let status = lines(&["--json", "status"]);
    assert_eq!(
        status,
        vec![json!({
            "peer_id": "12D3KooWtest",
            "listen": ["/ip4/127.0.0.1/tcp/4001"],
            "connected": ["bob"],
            "outbox": 1,
            "fingerprint": "1111 2222",
            "name": "Alice",
        })]
    );
}

#[test]
fn human_output() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let out = merpati(tmp.path(), &["messages", "bob"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{ID}  out  bob  2025-06-15 15:06:40  hi bob  [delivered]\n\
             ffffffffffffffffffffffffffffffff  in   bob  2025-06-15 15:06:40  hi\\n\\u{{1b}}[2Jyou\n"
        )
    );
    let out = merpati(tmp.path(), &["contact", "list"]);
    assert_eq!(
        stdout(&out),
        "bob    aaaa bbbb  connected  last heard 2026-11-21 00:00:00  3 unread  restored from a backup 2026-11-20 23:58:20\n\
         carol  cccc dddd  -          never heard from\n"
    );
    let out = merpati(tmp.path(), &["status"]);
    let text = stdout(&out);
    assert!(text.contains("peer id:      12D3KooWtest\n") && text.contains("connected:    bob\n"), "{text}");
    assert!(text.starts_with("name:         Alice\nfingerprint:  1111 2222\n"), "{text}");
    assert!(text.contains("outbox:       1 message waiting to be sent\n"), "{text}");
}

#[test]
fn send_wait_times_out_with_exit_8() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), everyday);
    let started = Instant::now();
    let out = merpati(tmp.path(), &["send", "bob", "hello bob", "--wait", "delivered", "--timeout", "1"]);
    let elapsed = started.elapsed();
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{ID}\n"), "the id is printed before waiting");
    let message = stderr(&out);
    assert!(
        message.contains("gave up waiting after 1 s") && message.contains("queued, not yet delivered"),
        "{message}"
    );
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// A daemon whose subscriptions report `update` for the message right away.
fn reporting(update: StatusUpdate) -> impl Fn(&Request) -> (Vec<String>, bool) + Send + Sync + 'static {
    move |request| match request.method.as_str() {
        "subscribe" => (
            vec![
                Response::ok(request.id.clone(), json!({})).to_line(),
                Event::Status(StatusUpdate { status: MessageStatus::Sent, ..update.clone() })
                    .to_notification()
                    .to_line(),
                Event::Status(update.clone()).to_notification().to_line(),
            ],
            false,
        ),
        _ => everyday(request),
    }
}

#[test]
fn send_wait_returns_once_the_status_is_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ID.parse().unwrap();
    fake_daemon(
        tmp.path(),
        reporting(StatusUpdate { id, status: MessageStatus::Read, reason: None, stored: None }),
    );
    let out = merpati(tmp.path(), &["send", "bob", "hello bob", "--wait", "delivered"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{ID}\n"));
    assert_eq!(stderr(&out), format!("message {ID} read\n"));

    let out = merpati(tmp.path(), &["--json", "send", "bob", "hello bob", "--wait", "sent"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{{\"id\":\"{ID}\"}}\n{{\"id\":\"{ID}\",\"status\":\"sent\"}}\n"));
}

#[test]
fn send_wait_exits_9_when_the_message_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let update = StatusUpdate {
        id: ID.parse().unwrap(),
        status: MessageStatus::Failed,
        reason: Some("bob's invite expired".into()),
        stored: None,
    };
    fake_daemon(tmp.path(), reporting(update));
    let out = merpati(tmp.path(), &["send", "bob", "hello bob", "--wait", "read"]);
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    assert_eq!(stderr(&out), format!("merpati: message {ID} to bob failed: bob's invite expired\n"));
}

#[test]
fn messages_follow_prints_new_messages_once() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), |request| match request.method.as_str() {
        "subscribe" => {
            let new = MessageView {
                id: "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".parse().unwrap(),
                ..view(Direction::In, "new", None)
            };
            let other = MessageView { contact: "carol".into(), ..new.clone() };
            let lines = vec![
                Response::ok(request.id.clone(), json!({})).to_line(),
                // Already in the history: not printed twice.
                Event::Message(view(Direction::Out, "hi bob", Some(MessageStatus::Delivered)))
                    .to_notification()
                    .to_line(),
                Event::Message(other).to_notification().to_line(),
                Event::Message(new).to_notification().to_line(),
            ];
            // Then the daemon stops.
            (lines, true)
        }
        "messages" => ok(
            request,
            MessagesResult {
                messages: vec![view(Direction::Out, "hi bob", Some(MessageStatus::Delivered))],
                cut: false,
            },
        ),
        _ => everyday(request),
    });
    let out = merpati(tmp.path(), &["--json", "messages", "bob", "--follow"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "following new messages (Ctrl-C to stop)\nmerpati: merpatid closed the connection (did it stop?)\n"
    );
    let texts: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["hi bob", "new"]);
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["send", "bob"][..],
        &["frobnicate"],
        &["send", "bob", "x", "--wait", "soon"],
        &["messages", "--limit", "0"],
        &["relay"],
        &["relay", "add"],
        &["relay", "remove"],
        &["relay", "list", "extra"],
    ] {
        let out = merpati(tmp.path(), args);
        assert_eq!(code(&out), 2, "{args:?}");
    }
    let help = merpati(tmp.path(), &["--help"]);
    assert_eq!(code(&help), 0);
    assert!(stdout(&help).contains("contact") && stdout(&help).contains("relay"));
    let help = stdout(&merpati(tmp.path(), &["relay", "--help"]));
    assert!(help.contains("offline") && help.contains("NAT") && help.contains("ciphertext"), "{help}");
}

fn relay_view(addr: &str, connected: bool, reserved: bool) -> RelayView {
    let peer_id = addr.rsplit('/').next().unwrap().to_owned();
    RelayView { addr: addr.into(), peer_id, connected, reserved }
}

/// A daemon with two relays that refuses bad addresses, unknown relays and a fifth relay the way
/// merpatid does.
fn relays(request: &Request) -> (Vec<String>, bool) {
    let listed = || RelayListResult {
        relays: vec![
            relay_view(RELAY, true, true),
            relay_view("/dns4/relay.example.org/udp/4001/quic-v1/p2p/12D3KooWother", false, false),
        ],
    };
    match request.method.as_str() {
        "relay.list" => ok(request, listed()),
        "relay.add" => {
            let params = request.params_of::<method::RelayAdd>().unwrap();
            match params.addr.as_str() {
                RELAY => ok(request, listed()),
                "/ip4/198.51.100.5/tcp/4001/p2p/12D3KooWfifth" => app_error(
                    request,
                    AppError::RelayListFull,
                    "this node already uses 4 relays, as many as an invite can list; remove one first",
                ),
                _ => app_error(
                    request,
                    AppError::InvalidRelayAddress,
                    "the relay address must end in /p2p/<peer id>",
                ),
            }
        }
        "relay.remove" => {
            let params = request.params_of::<method::RelayRemove>().unwrap();
            if params.relay == "12D3KooWother" {
                ok(request, RelayListResult { relays: vec![relay_view(RELAY, true, true)] })
            } else {
                app_error(request, AppError::UnknownRelay, "this node does not use that relay")
            }
        }
        _ => everyday(request),
    }
}

#[test]
fn relay_list_human_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), relays);
    let out = merpati(tmp.path(), &["relay", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay                 connected  reserved\n\
         /dns4/relay.example.org/udp/4001/quic-v1/p2p/12D3KooWother  -          -\n"
    );

    let out = merpati(tmp.path(), &["--json", "relay", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines,
        vec![
            json!({"addr": RELAY, "peer_id": "12D3KooWrelay", "connected": true, "reserved": true}),
            json!({"addr": "/dns4/relay.example.org/udp/4001/quic-v1/p2p/12D3KooWother", "peer_id": "12D3KooWother", "connected": false, "reserved": false}),
        ]
    );
}

#[test]
fn relay_add_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), relays);
    // Surrounding whitespace from a paste is dropped before the daemon sees the address.
    let out = merpati(tmp.path(), &["relay", "add", &format!(" {RELAY}\n")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("Added relay {RELAY}.\n")), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    let out = merpati(tmp.path(), &["relay", "remove", "12D3KooWother"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("Removed relay 12D3KooWother.\n{RELAY}  connected  reserved\n"));

    let out = merpati(tmp.path(), &["--json", "relay", "remove", "12D3KooWother"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{{\"addr\":\"{RELAY}\",\"peer_id\":\"12D3KooWrelay\",\"connected\":true,\"reserved\":true}}\n"
        )
    );
}

#[test]
fn relay_errors_have_their_own_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), relays);
    let out = merpati(tmp.path(), &["relay", "add", "/ip4/203.0.113.7/tcp/4001"]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert_eq!(stderr(&out), "merpati: the relay address must end in /p2p/<peer id>\n");
    assert!(stdout(&out).is_empty());

    let out = merpati(tmp.path(), &["relay", "remove", "12D3KooWnobody"]);
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert_eq!(stderr(&out), "merpati: this node does not use that relay\n");

    let out = merpati(tmp.path(), &["relay", "add", "/ip4/198.51.100.5/tcp/4001/p2p/12D3KooWfifth"]);
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(stderr(&out).contains("remove one first"), "{}", stderr(&out));
}

#[test]
fn an_empty_relay_list_says_how_to_add_one() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), |request| match request.method.as_str() {
        "relay.list" => ok(request, RelayListResult { relays: vec![] }),
        _ => everyday(request),
    });
    let out = merpati(tmp.path(), &["relay", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "No relays; add one with: merpati relay add /ip4/…/tcp/4001/p2p/12D3…\n");
    let out = merpati(tmp.path(), &["--json", "relay", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

fn stored(accepted: u32, total: u32) -> Option<StoredCount> {
    Some(StoredCount { accepted, total })
}

#[test]
fn messages_show_how_many_relays_hold_a_stored_message() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), |request| match request.method.as_str() {
        "messages" => ok(
            request,
            MessagesResult {
                messages: vec![MessageView {
                    stored: stored(1, 2),
                    reason: None,
                    ..view(Direction::Out, "hi bob", Some(MessageStatus::Stored))
                }],
                cut: false,
            },
        ),
        _ => everyday(request),
    });
    let out = merpati(tmp.path(), &["messages"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{ID}  out  bob  2025-06-15 15:06:40  hi bob  [stored 1/2]\n"));
    let out = merpati(tmp.path(), &["--json", "messages"]);
    let value: Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(value["status"], "stored");
    assert_eq!(value["stored"], json!({"accepted": 1, "total": 2}));
}

#[test]
fn send_wait_sent_is_satisfied_by_a_relay() {
    let tmp = tempfile::tempdir().unwrap();
    fake_daemon(tmp.path(), |request| match request.method.as_str() {
        "subscribe" => {
            let update = |accepted| StatusUpdate {
                id: ID.parse().unwrap(),
                status: MessageStatus::Stored,
                reason: None,
                stored: stored(accepted, 1),
            };
            (
                vec![
                    Response::ok(request.id.clone(), json!({})).to_line(),
                    // No relay has it yet: not out of the node, keep waiting.
                    Event::Status(update(0)).to_notification().to_line(),
                    Event::Status(update(1)).to_notification().to_line(),
                ],
                false,
            )
        }
        _ => everyday(request),
    });
    let out = merpati(tmp.path(), &["send", "bob", "hello bob", "--wait", "sent", "--timeout", "5"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{ID}\n"));
    assert_eq!(stderr(&out), format!("message {ID} stored 1/1\n"));

    let out =
        merpati(tmp.path(), &["--json", "send", "bob", "hello bob", "--wait", "sent", "--timeout", "5"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{{\"id\":\"{ID}\"}}\n{{\"id\":\"{ID}\",\"status\":\"stored\",\"stored\":{{\"accepted\":1,\"total\":1}}}}\n"
        )
    );

    // Waiting for more than that times out and says how far the message got.
    let out = merpati(tmp.path(), &["send", "bob", "hello bob", "--wait", "delivered", "--timeout", "1"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("is stored 1/1, not yet delivered"), "{}", stderr(&out));
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_and_need_no_home() {
    let tmp = tempfile::tempdir().unwrap();
    // A home that does not exist: neither command touches it.
    let home = tmp.path().join("no such home");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = merpati(&home, &["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("requests") && script.contains("unblock"), "{shell}: {script}");
    }
    let out = merpati(&home, &["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");

    let out = merpati(&home, &["man"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(".TH merpati 1"), "{}", stdout(&out));
    let pages = tmp.path().join("man1");
    let out = merpati(&home, &["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let accept = std::fs::read_to_string(pages.join("merpati-requests-accept.1")).unwrap();
    assert!(accept.contains("suggested name"), "{accept}");
    assert!(pages.join("merpati-contact-rename.1").exists() && pages.join("merpati-send.1").exists());
    assert!(!home.exists());
}

#[test]
fn export_reads_every_page_and_writes_them_oldest_first() {
    // 2 500 messages: three pages of at most 1 000, read from the newest back.
    const COUNT: usize = 2_500;
    let tmp = tempfile::tempdir().unwrap();
    let message = |n: usize| MessageView {
        id: format!("{n:032x}").parse().unwrap(),
        text: format!("message {n}"),
        ..view(Direction::In, "", None)
    };
    fake_daemon(tmp.path(), move |request| match request.method.as_str() {
        "messages" => {
            let params = request.params_of::<method::Messages>().unwrap();
            let end = params.before.map_or(COUNT, |id| usize::from_str_radix(&id.to_string(), 16).unwrap());
            let limit = params.limit.unwrap() as usize;
            let start = end.saturating_sub(limit);
            ok(request, MessagesResult { messages: (start..end).map(message).collect(), cut: false })
        }
        _ => everyday(request),
    });
    let out = merpati(tmp.path(), &["export", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let texts: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, (0..COUNT).map(|n| format!("message {n}")).collect::<Vec<_>>());
}

#[test]
fn chat_without_a_terminal_says_what_scripts_use_instead() {
    let home = tempfile::tempdir().unwrap();
    let out = merpati(home.path(), &["chat"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("merpati chat needs a terminal"), "{}", stderr(&out));
    assert!(stderr(&out).contains("messages --follow"), "{}", stderr(&out));
}
