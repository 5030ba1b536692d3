//! Bad input against real daemons: each case gets a clear message and its exit code, and the
//! daemon keeps working.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use merpati_e2e::{DaemonConfig, Node, text};
use serde_json::Value;

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn commands_without_a_daemon_or_identity_say_what_to_do() {
    let node = Node::uninitialised();
    let out = node.cli(&["status"]);
    assert_eq!(code(&out), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("init"), "{}", text(&out.stderr));

    let node = Node::init("Alice");
    let out = node.cli(&["status"]);
    assert_eq!(code(&out), Some(3));
    assert!(text(&out.stderr).contains("merpatid"), "{}", text(&out.stderr));

    let out = node.cli(&["init"]);
    assert_ne!(code(&out), Some(0), "init must refuse to overwrite");
}

#[test]
fn the_daemon_refuses_a_second_instance_and_a_missing_identity() {
    let mut node = Node::init("Alice");
    node.start();
    let second = node.spawn_daemon().wait_with_output().unwrap();
    assert!(!second.status.success());
    assert!(node.log().contains("already running"), "{}", node.log());

    let bare = Node::uninitialised();
    let out = bare.spawn_daemon().wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(bare.log().contains("merpati init"), "{}", bare.log());
}

#[test]
fn bad_requests_get_their_exit_codes() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();

    let out = alice.cli(&["send", "nobody", "hi"]);
    assert_eq!(code(&out), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nobody"));

    let mut invite = bob.invite();
    let out = alice.cli(&["contact", "add", &invite[..invite.len() - 5], "--name", "bob"]);
    assert_eq!(code(&out), Some(6), "{}", text(&out.stderr));
    let last = invite.pop().unwrap();
    invite.push(if last == 'A' { 'B' } else { 'A' });
    let out = alice.cli(&["contact", "add", &invite, "--name", "bob"]);
    assert_eq!(code(&out), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invite"), "{}", text(&out.stderr));

    alice.add(&bob, "bob");
    let big = "x".repeat(1024 * 1024 + 1);
    let out = alice.cli_with_input(&["send", "bob", "-"], Some(&big));
    assert_eq!(code(&out), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1048576 bytes"), "the limit is named: {}", text(&out.stderr));
    // A typo gets the nearest name offered.
    let out = alice.cli(&["send", "bbo", "hi"]);
    assert_eq!(code(&out), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("did you mean \"bob\"?"), "{}", text(&out.stderr));
    // Nothing was queued by the refusals.
    assert!(alice.messages(None).is_empty());
    // Names match whatever their case.
    alice.send("BOB", "capitals are fine");
    assert_eq!(alice.messages(Some("Bob"))[0]["contact"], "bob");
}

#[test]
fn garbage_on_the_control_socket_gets_an_error_and_others_are_still_served() {
    let mut node = Node::init("Alice");
    node.start();
    let socket = node.home().join("control.sock");
    let mut bad = UnixStream::connect(&socket).unwrap();
    bad.write_all(b"this is not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(bad.try_clone().unwrap()).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["error"]["code"], -32700);
    // The same connection still works, and so does another one.
    bad.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"params\":{}}\n").unwrap();
    let mut line = String::new();
    BufReader::new(bad).read_line(&mut line).unwrap();
    assert!(line.contains("peer_id"), "{line}");
    assert!(node.cli(&["status"]).status.success());
}

#[test]
fn a_corrupt_database_is_a_clear_error_not_a_panic() {
    let mut node = Node::init("Alice");
    node.start();
    node.stop();
    // Overwrite every file of the database with junk.
    for entry in walk(&node.home().join("db")) {
        std::fs::write(&entry, b"junk junk junk").unwrap();
    }
    let out = node.spawn_daemon().wait_with_output().unwrap();
    assert!(!out.status.success());
    let log = node.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("database"), "{log}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_mistyped_config_file_is_a_clear_error() {
    let node = Node::init("Alice");
    std::fs::write(node.home().join("merpatid.toml"), "lisen = [\"/ip4/0.0.0.0/tcp/0\"]\n").unwrap();
    let out = node.spawn_daemon().wait_with_output().unwrap();
    assert!(!out.status.success());
    let log = node.log();
    assert!(log.contains("merpatid.toml") && log.contains("lisen"), "{log}");
}

/// Waits up to 20 s for `child` to exit; one still running (it started where it should have
/// refused) is killed and fails the test.
fn exits_within(mut child: std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} started on a port in use");
}

#[test]
fn a_port_another_daemon_listens_on_is_refused_with_its_address() {
    let mut alice = Node::init("Alice");
    let port = merpati_e2e::tcp_port_of(&alice.start().listen[0].clone()).unwrap();
    let taken = format!("/ip4/127.0.0.1/tcp/{port}");

    let mut bob = Node::init("Bob");
    bob.configure(DaemonConfig { listen: vec![taken.clone()], ..DaemonConfig::default() });
    let status = exits_within(bob.spawn_daemon(), "a second daemon");
    assert!(!status.success());
    assert!(bob.log().contains(&taken) && bob.log().contains("in use"), "{}", bob.log());

    // A relay the same.
    let relay_home = tempfile::tempdir().unwrap();
    let relay_log = relay_home.path().join("relay.log");
    let relay = std::process::Command::new(&merpati_e2e::bins().merpatid)
        .args(["--relay", "--home"])
        .arg(relay_home.path().join("home"))
        .args(["--listen", &taken])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&relay_log).unwrap())
        .spawn()
        .unwrap();
    assert!(!exits_within(relay, "a relay").success());
    let log = std::fs::read_to_string(&relay_log).unwrap();
    assert!(log.contains(&taken) && log.contains("in use"), "{log}");
    // Alice was not disturbed.
    assert!(alice.cli(&["status"]).status.success());
}
