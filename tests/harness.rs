//! Test harness for end-to-end scenarios: real `merpatid` processes with their own temporary
//! homes on 127.0.0.1, driven through the real `merpati` CLI.
//!
//! The binaries are the workspace's own, found next to the test executable (cargo builds them for
//! `cargo test --workspace`); if they are missing, the harness builds them once with cargo.
//!
//! Scenarios beyond loopback run daemons inside Linux network namespaces ([`Netns`], joined by
//! [`veth`] pairs) with a [`DaemonConfig`] of their own; the CLI stays in the machine's namespace,
//! since the control socket is a file in the home.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test support: a failed step is a failed test

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
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

/// How [`Node::start`] runs `merpatid`.
///
/// The default is the loopback setup every scenario on 127.0.0.1 uses: TCP on 127.0.0.1 with a
/// port the system picks, no mDNS, in the machine's own network namespace.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The `--listen` addresses.
    pub listen: Vec<String>,
    /// Whether mDNS is on (off passes `--no-mdns`).
    pub mdns: bool,
    /// The network namespace to run in (`ip netns exec NAME merpatid …`), if any.
    pub netns: Option<String>,
    /// The daemon's clock offset in days (`MERPATI_CLOCK_OFFSET`): a start "days later".
    pub clock_days: i64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            mdns: false,
            netns: None,
            clock_days: 0,
        }
    }
}

/// One user: a home directory, maybe a running daemon.
#[derive(Debug)]
pub struct Node {
    home: tempfile::TempDir,
    daemon: Option<Child>,
    config: DaemonConfig,
    /// The daemon's startup line, once started.
    pub ready: Option<Ready>,
}

/// How long to wait for a daemon to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// A fresh home with an identity (`merpati init --name NAME`).
    pub fn init(name: &str) -> Node {
        let node = Node::uninitialised();
        let out = node.cli(&["init", "--name", name]);
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        node
    }

    /// A fresh home without an identity.
    pub fn uninitialised() -> Node {
        Node {
            home: tempfile::tempdir().unwrap(),
            daemon: None,
            config: DaemonConfig::default(),
            ready: None,
        }
    }

    /// How the daemon runs from its next start on.
    pub fn configure(&mut self, config: DaemonConfig) {
        self.config = config;
    }

    /// Moves the daemon's clock to `days` after the real time, from its next start on.
    pub fn set_clock_days(&mut self, days: i64) {
        self.config.clock_days = days;
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
        let mut command = match &self.config.netns {
            None => Command::new(&bins().merpatid),
            Some(netns) => {
                // `ip netns exec` execs the daemon in place: the child's pid is merpatid's, so
                // signals reach it directly.
                let mut command = Command::new(ip_command());
                command.args(["netns", "exec", netns]).arg(&bins().merpatid);
                command
            }
        };
        command.arg("--home").arg(self.home());
        for addr in &self.config.listen {
            command.args(["--listen", addr]);
        }
        if !self.config.mdns {
            command.arg("--no-mdns");
        }
        command
            .env("RUST_LOG", "merpati_node=debug")
            .env("MERPATI_CLOCK_OFFSET", format!("{}d", self.config.clock_days))
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
        let line = ready_line(&mut child);
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("merpatid did not start: {line:?}\n{}", self.log()));
        let ready = Ready {
            peer_id: value["peer_id"].as_str().unwrap().to_owned(),
            listen: strings(&value["listen"]),
        };
        // Contacts keep the address they were given, and `--listen` is used as written: a node
        // restarted on the default setup asks for the port it got the first time.
        if self.config.listen == DaemonConfig::default().listen
            && let Some(port) = ready.listen.iter().find_map(|addr| tcp_port_of(addr))
        {
            self.config.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}")];
        }
        self.daemon = Some(child);
        self.ready.insert(ready)
    }

    /// Stops the daemon cleanly (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        stop_cleanly(self.daemon.take(), "merpatid", || self.log());
    }

    /// Kills the daemon (SIGKILL): no chance to clean up.
    pub fn kill(&mut self) {
        kill_now(self.daemon.take());
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

    /// Starts `merpati messages ARGS… --follow` on this node; its lines are read as they come.
    pub fn follow(&self, args: &[&str]) -> Follower {
        let mut child = Command::new(&bins().merpati)
            .arg("--home")
            .arg(self.home())
            .arg("messages")
            .args(args)
            .arg("--follow")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::sync_channel(256);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // It says on stderr once it is subscribed: from then on nothing stored is missed.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        stderr.read_line(&mut said).unwrap();
        assert!(said.starts_with("following new messages"), "messages --follow said: {said}");
        Follower { child, lines, seen: Vec::new() }
    }

    /// The id `other`'s contact requests get here: the first 16 hex digits of their fingerprint.
    pub fn request_id_of(other: &Node) -> String {
        let status: Value = serde_json::from_str(other.ok(&["--json", "status"]).trim()).unwrap();
        status["fingerprint"].as_str().unwrap().replace(' ', "")[..16].to_owned()
    }

    /// Waits for `other`'s contact request (their first contact: they hold this node's invite,
    /// this node does not hold theirs) and accepts it under `name`.
    pub fn accept_request(&self, other: &Node, name: &str) {
        let id = Node::request_id_of(other);
        wait_until(&format!("{name}'s contact request"), Duration::from_secs(120), || {
            self.ok(&["--json", "requests"]).lines().any(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|request| request["id"] == id.as_str())
            })
        });
        self.ok(&["requests", "accept", &id, "--name", name]);
    }

    /// Sends `text` to `to`; returns the message id.
    pub fn send(&self, to: &str, text: &str) -> String {
        self.ok(&["send", to, "--", text]).trim().to_owned()
    }

    /// Calls `method` with `params` on the daemon's control API (JSON-RPC over `control.sock`)
    /// and returns its result, failing the test on an error answer.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        use std::io::Write;
        let mut socket = std::os::unix::net::UnixStream::connect(self.home().join("control.sock")).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let request = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        writeln!(socket, "{request}").unwrap();
        let mut line = String::new();
        BufReader::new(socket).read_line(&mut line).unwrap();
        let mut answer: Value = serde_json::from_str(&line).unwrap();
        assert!(answer["error"].is_null(), "{method} should succeed, got {line}");
        answer["result"].take()
    }

    /// Where the outgoing message `id` is: the control API's `message.status` (status, relay
    /// count, and the reason it is still queued or failed).
    pub fn message_status(&self, id: &str) -> Value {
        self.rpc("message.status", serde_json::json!({ "id": id }))
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

/// What `merpatid --relay` prints when it is ready.
#[derive(Debug, Clone)]
pub struct RelayReady {
    /// The relay's peer id.
    pub peer_id: String,
    /// Its listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The addresses users add (`merpati relay add`), with `/p2p/<peer id>`.
    pub public: Vec<String>,
    /// The metrics endpoint (`http://…/metrics`), if the config asks for one.
    pub metrics: Option<String>,
}

/// A community relay: `merpatid --relay` with a home of its own and, if given, a config file.
///
/// The first start listens on a port the system picks on 127.0.0.1; every later start listens on
/// the same port again, so the address users were given stays valid across restarts (the peer id
/// does too: it comes from `<home>/relay.key`).
#[derive(Debug)]
pub struct Relay {
    home: tempfile::TempDir,
    config: Option<PathBuf>,
    daemon: Option<Child>,
    port: u16,
    clock_days: i64,
    /// The relay's startup line, once started.
    pub ready: Option<RelayReady>,
}

impl Relay {
    /// A relay with a fresh home and `config` (TOML, see `contrib/relay.toml`) as its config
    /// file, if given. Nothing runs yet.
    pub fn new(config: Option<&str>) -> Relay {
        let home = tempfile::tempdir().unwrap();
        let config = config.map(|text| {
            // Next to the home rather than inside it, so the home holds only what the relay wrote.
            let path = home.path().with_extension("toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        Relay { home, config, daemon: None, port: 0, clock_days: 0, ready: None }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Moves the relay's clock to `days` after the real time, from its next start on.
    pub fn set_clock_days(&mut self, days: i64) {
        self.clock_days = days;
    }

    /// Where the mailboxes are stored (the default, `<home>/mailboxes`).
    pub fn data_dir(&self) -> PathBuf {
        self.home().join("mailboxes")
    }

    /// The relay's log (its stderr, over all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        // Outside the home: the log is the test's, not the relay's data.
        self.home().with_extension("log")
    }

    /// Starts the relay and waits for its ready line.
    pub fn start(&mut self) -> &RelayReady {
        assert!(self.daemon.is_none(), "relay already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut command = Command::new(&bins().merpatid);
        command
            .arg("--relay")
            .arg("--home")
            .arg(self.home())
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", self.port)])
            .arg("--no-mdns");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .env("RUST_LOG", "merpati_node=debug")
            .env("MERPATI_CLOCK_OFFSET", format!("{}d", self.clock_days))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let line = ready_line(&mut child);
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the relay did not start: {line:?}\n{}", self.log())
        });
        assert_eq!(value["role"], "relay", "the relay's ready line should say role relay: {line}");
        let ready = RelayReady {
            peer_id: value["peer_id"].as_str().unwrap().to_owned(),
            listen: strings(&value["listen"]),
            public: strings(&value["public"]),
            metrics: value["metrics"].as_str().map(str::to_owned),
        };
        let port = ready
            .public
            .first()
            .and_then(|addr| addr.split('/').skip_while(|part| *part != "tcp").nth(1))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the relay's public address should carry its TCP port: {line}"));
        if self.port != 0 {
            assert_eq!(port, self.port, "a restarted relay should listen on its old port");
        }
        self.port = port;
        if let Some(previous) = &self.ready {
            assert_eq!(previous.peer_id, ready.peer_id, "a restarted relay should keep its peer id");
        }
        self.daemon = Some(child);
        self.ready.insert(ready)
    }

    /// The address users add: the first public address, ending in `/p2p/<peer id>`.
    pub fn addr(&self) -> String {
        self.ready.as_ref().expect("the relay has been started").public[0].clone()
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> String {
        self.ready.as_ref().expect("the relay has been started").peer_id.clone()
    }

    /// Whether the relay process is running.
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// Stops the relay cleanly (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        stop_cleanly(self.daemon.take(), "the relay", || self.log());
    }

    /// Kills the relay (SIGKILL): no chance to flush or clean up.
    pub fn kill(&mut self) {
        kill_now(self.daemon.take());
    }

    /// The metrics endpoint's exposition text; the relay must run with `metrics` configured.
    pub fn metrics(&self) -> String {
        let url = self.ready.as_ref().and_then(|r| r.metrics.clone()).expect("the relay serves metrics");
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        use std::io::Write;
        write!(stream, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let response = drain(stream);
        assert!(response.starts_with("HTTP/1.1 200"), "the metrics endpoint should answer 200: {response}");
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
    }

    /// The value of metric `name` (a line `name value`, without labels), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.log_path());
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config);
        }
    }
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

/// The files under `dir` that contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(needle.len()).any(|window| window == needle)
        })
        .collect()
}

/// A TCP port of 127.0.0.1 that was free a moment ago (the system picked it), for settings that
/// need a fixed port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (up to [`START_TIMEOUT`]) for the first line a daemon prints on stdout.
fn ready_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(START_TIMEOUT).unwrap_or_default()
}

/// A JSON array of strings.
fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// Stops a daemon with SIGTERM and checks that it exits cleanly; `log` is shown if not.
fn stop_cleanly(child: Option<Child>, what: &str, log: impl FnOnce() -> String) {
    if let Some(mut child) = child {
        signal(&child, rustix::process::Signal::TERM);
        let status = wait_with_timeout(&mut child, Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{what} did not stop cleanly: {status:?}\n{}", log());
    }
}

/// Kills a daemon with SIGKILL and reaps it.
fn kill_now(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running `merpati messages --follow`; killed when dropped.
#[derive(Debug)]
pub struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    /// Waits (up to two minutes) until a line containing `what` was printed; returns it.
    pub fn wait_for(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(line) = self.seen.iter().find(|line| line.contains(what)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {what:?} from messages --follow: {:?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A Linux network namespace (`ip netns`), deleted when dropped. Only root can make one.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named `mp-<pid>-<n>-<tag>` (unique per test process and call) with its
    /// loopback up. `Err` says why this machine cannot make one: not root, no `ip` (iproute2), or
    /// the kernel refused. Namespaces left by test processes that died without cleaning up (say,
    /// killed by a signal) are removed first.
    pub fn create(tag: &str) -> Result<Netns, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static STALE_REMOVED: Once = Once::new();
        if !rustix::process::geteuid().is_root() {
            return Err("network namespaces need root".to_owned());
        }
        if let Err(e) = Command::new(ip_command()).arg("-V").output() {
            return Err(format!("cannot run `ip` (iproute2): {e}"));
        }
        STALE_REMOVED.call_once(remove_stale_namespaces);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Its name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS…`; `Err` has the command and its error output.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Its interfaces (a veth end) go with it.
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Joins `a` and `b` with a veth pair, an interface `NAME` in each with the given address (CIDR,
/// e.g. `10.213.0.1/24`), both ends up. Nothing is created in the machine's own namespace.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, name: &str) -> Result<(), String> {
    a.ip(&["link", "add", name, "type", "veth", "peer", "name", name, "netns", b.name()])?;
    for (netns, addr) in [(a, a_addr), (b, b_addr)] {
        netns.ip(&["addr", "add", addr, "dev", name])?;
        netns.ip(&["link", "set", name, "up"])?;
    }
    Ok(())
}

/// The start of every namespace name [`Netns::create`] makes.
const NETNS_PREFIX: &str = "mp-";

/// `ip`, from `PATH` or where distributions put it (`/usr/sbin` is not in every `PATH`).
fn ip_command() -> &'static Path {
    static IP: OnceLock<PathBuf> = OnceLock::new();
    IP.get_or_init(|| {
        let in_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("ip"));
        in_path
            .chain(["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].map(PathBuf::from))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("ip"))
    })
}

/// Runs `ip ARGS…`; `Err` has the command and its error output.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(ip_command())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed ({}): {}", args.join(" "), out.status, text(&out.stderr).trim()))
    }
}

/// Deletes `mp-<pid>-…` namespaces whose test process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new(ip_command()).args(["netns", "list"]).output() else { return };
    for line in text(&out.stdout).lines() {
        // Lines read `NAME` or `NAME (id: N)`.
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(NETNS_PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// The TCP port of a `/ip4/…/tcp/PORT/…` address, if it has one.
pub fn tcp_port_of(addr: &str) -> Option<u16> {
    let parts: Vec<&str> = addr.split('/').collect();
    let at = parts.iter().position(|p| *p == "tcp")?;
    parts.get(at + 1)?.parse().ok()
}
