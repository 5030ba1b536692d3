//! Test harness for end-to-end scenarios: real `merpatid` processes with their own temporary
//! homes on 127.0.0.1, driven through the real `merpati` CLI.
//!
//! The binaries are the workspace's own, found next to the test executable (cargo builds them for
//! `cargo test --workspace`); if they are missing, the harness builds them once with cargo.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test support: a failed step is a failed test

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the two binaries are.
#[derive(Debug)]
pub struct Bins {
    /// The daemon.
    pub merpatid: PathBuf,
    /// The CLI.
    pub merpati: PathBuf,
}

/// The workspace's binaries, built if needed.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let bins = Bins { merpatid: dir.join("merpatid"), merpati: dir.join("merpati") };
        if !bins.merpatid.exists() || !bins.merpati.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "merpati-node", "-p", "merpati-cli", "--bins"])
                .status()
                .unwrap();
            assert!(status.success(), "building the binaries failed");
        }
        bins
    })
}

/// What `merpatid` prints when it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The node's peer id.
    pub peer_id: String,
    /// Its listen addresses.
    pub listen: Vec<String>,
}

/// One user: a home directory, maybe a running daemon.
#[derive(Debug)]
pub struct Node {
    home: tempfile::TempDir,
    daemon: Option<Child>,
    /// The daemon's startup line, once started.
    pub ready: Option<Ready>,
}

/// How long to wait for a daemon to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// A fresh home with an identity (`merpati init --name NAME`).
    pub fn init(name: &str) -> Node {
        let node = Node { home: tempfile::tempdir().unwrap(), daemon: None, ready: None };
        let out = node.cli(&["init", "--name", name]);
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        node
    }

    /// A fresh home without an identity.
    pub fn uninitialised() -> Node {
        Node { home: tempfile::tempdir().unwrap(), daemon: None, ready: None }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The daemon's log file (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("merpatid.log")).unwrap_or_default()
    }

    /// Spawns `merpatid` for this home without waiting for it.
    pub fn spawn_daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home().join("merpatid.log"))
            .unwrap();
        Command::new(&bins().merpatid)
            .arg("--home")
            .arg(self.home())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("RUST_LOG", "merpati_node=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// Starts the daemon and waits for its ready line.
    pub fn start(&mut self) -> &Ready {
        assert!(self.daemon.is_none(), "daemon already running");
        let mut child = self.spawn_daemon();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("merpatid did not start: {line:?}\n{}", self.log()));
        let ready = Ready {
            peer_id: value["peer_id"].as_str().unwrap().to_owned(),
            listen: value["listen"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
        };
        self.daemon = Some(child);
        self.ready.insert(ready)
    }

    /// Stops the daemon cleanly (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            signal(&child, rustix::process::Signal::TERM);
            let status = wait_with_timeout(&mut child, Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "merpatid did not stop cleanly: {status:?}\n{}",
                self.log()
            );
        }
    }

    /// Kills the daemon (SIGKILL): no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `merpati --home HOME ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_input(args, None)
    }

    /// Runs the CLI with `input` on its standard input.
    pub fn cli_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new(&bins().merpati)
            .arg("--home")
            .arg(self.home())
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs the CLI and returns its stdout, failing the test if it failed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "merpati {args:?} failed ({:?}): {}\n{}",
            out.status.code(),
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// This user's invite.
    pub fn invite(&self) -> String {
        self.ok(&["invite"]).lines().last().unwrap().to_owned()
    }

    /// Adds `other` as a contact named `name`.
    pub fn add(&self, other: &Node, name: &str) {
        let invite = other.invite();
        self.ok(&["contact", "add", &invite, "--name", name]);
    }

    /// Sends `text` to `to`; returns the message id.
    pub fn send(&self, to: &str, text: &str) -> String {
        self.ok(&["send", to, "--", text]).trim().to_owned()
    }

    /// The messages with `with` (all if `None`), as the CLI's JSON lines.
    pub fn messages(&self, with: Option<&str>) -> Vec<Value> {
        let mut args = vec!["--json", "messages", "--limit", "1000"];
        args.extend(with);
        self.ok(&args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `check` holds, polling, or panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lossy UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads whatever a child wrote to a pipe, for diagnostics.
pub fn drain(mut reader: impl Read) -> String {
    let mut out = String::new();
    let _ = reader.read_to_string(&mut out);
    out
}
