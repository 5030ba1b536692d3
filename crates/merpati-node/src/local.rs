//! Throwaway local nodes: a `merpatid` process with a fresh identity in a temporary home,
//! listening on 127.0.0.1 and driven over its control API, and a throwaway community relay
//! (`merpatid --relay`). Used by `merpatid demo` and the benchmark harness.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use merpati_control::client::Client;
use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;

use crate::clock::Clock;
use crate::daemon::os_rng;

/// One user's node on this machine.
#[derive(Debug)]
pub struct LocalNode {
    /// The user's display name.
    pub name: &'static str,
    /// The node's home directory.
    pub home: Home,
    exe: PathBuf,
    daemon: Option<Child>,
}

impl LocalNode {
    /// A new identity in `<dir>/<name>`, for the daemon binary `exe`.
    pub fn create(name: &'static str, dir: &Path, exe: &Path) -> anyhow::Result<LocalNode> {
        let home = Home::at(dir.join(name.to_lowercase()))?;
        home.create_dir()?;
        IdentityFile::create(&mut os_rng()?, Some(name.to_owned()), Clock::system().now())?
            .save_new(&home.identity_file())?;
        Ok(LocalNode { name, home, exe: exe.to_owned(), daemon: None })
    }

    /// Starts the daemon on 127.0.0.1 (no mDNS) and waits until it is ready; returns its first
    /// listen address.
    pub fn start(&mut self) -> anyhow::Result<String> {
        let mut command = Command::new(&self.exe);
        command.arg("--home").arg(self.home.dir()).args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"]);
        let (child, ready) = spawn_until_ready(command, &self.home.dir().join("merpatid.log"))?;
        self.daemon = Some(child);
        Ok(ready["listen"][0].as_str().unwrap_or_default().to_owned())
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Kills the daemon (SIGKILL): the hardest way to stop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A control-API client for this node.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.home)?)
    }
}

/// Starts `command` (a `merpatid`) with its stderr appended to `log_path`, and waits for its
/// startup line, which it returns parsed.
pub fn spawn_until_ready(
    mut command: Command,
    log_path: &Path,
) -> anyhow::Result<(Child, serde_json::Value)> {
    let log = std::fs::File::options().create(true).append(true).open(log_path)?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line)?;
    }
    if line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("merpatid did not start; see {}", log_path.display());
    }
    let ready = serde_json::from_str(&line)?;
    Ok((child, ready))
}

/// A community relay on this machine.
#[derive(Debug)]
pub struct LocalRelay {
    /// The relay's home directory.
    pub dir: PathBuf,
    exe: PathBuf,
    daemon: Option<Child>,
}

/// What a started relay said about itself.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// The address users add (`merpati relay add`), ending in `/p2p/<peer id>`.
    pub addr: String,
    /// The relay's peer id.
    pub peer_id: String,
}

impl LocalRelay {
    /// A relay with its home in `dir`, for the daemon binary `exe`.
    pub fn new(dir: &Path, exe: &Path) -> LocalRelay {
        LocalRelay { dir: dir.to_owned(), exe: exe.to_owned(), daemon: None }
    }

    /// Starts the relay on 127.0.0.1 (on `port`, or one the system picks) with `config` (TOML,
    /// if any) and waits until it is ready.
    pub fn start(&mut self, port: u16, config: Option<&str>) -> anyhow::Result<RelayInfo> {
        std::fs::create_dir_all(&self.dir)?;
        let mut command = Command::new(&self.exe);
        command
            .arg("--relay")
            .arg("--home")
            .arg(&self.dir)
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]);
        if let Some(config) = config {
            let path = self.dir.join("relay.toml");
            std::fs::write(&path, config)?;
            command.arg("--config").arg(path);
        }
        let (child, ready) = spawn_until_ready(command, &self.dir.join("merpatid.log"))?;
        self.daemon = Some(child);
        Ok(RelayInfo {
            addr: ready["public"][0].as_str().unwrap_or_default().to_owned(),
            peer_id: ready["peer_id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The relay's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Kills the relay (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalRelay {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.kill();
    }
}
