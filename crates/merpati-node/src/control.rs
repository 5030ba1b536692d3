//! The control API server: JSON-RPC 2.0 over the home directory's Unix socket, newline-delimited.
//!
//! Each connection is a task that reads requests (at most [`MAX_LINE`] bytes each), hands them to
//! the daemon's engine task over a bounded channel and writes the answers in order. After
//! `subscribe`, the connection also receives the daemon's notifications. A malformed line gets a
//! JSON-RPC error and the connection stays usable; a slow subscriber that falls behind the bounded
//! notification buffer is told nothing is lost from the store (it can re-list `messages`) and
//! continues with newer events.

use std::path::Path;

use futures::{SinkExt, StreamExt};
use merpati_control::protocol::method::Method as _;
use merpati_control::protocol::{self, Event, Request, Response};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

/// The longest request line accepted, in bytes: the control API's limit.
pub const MAX_LINE: usize = protocol::MAX_LINE;
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// A request for the engine task, with where to send its answer.
#[derive(Debug)]
pub struct Command {
    /// The parsed request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the control socket at `path` with mode 0600. The caller holds the home's lock, so a file
/// already there is a stale socket from a daemon that did not shut down cleanly.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    net: crate::net::Handle,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if !same_user(&stream) => {
                    // The socket is 0600 in a 0700 home; this is the second lock on that door.
                    tracing::warn!("refused a control connection from another user");
                }
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(connection(
                        stream,
                        net.clone(),
                        commands.clone(),
                        events.clone(),
                        shutdown.clone(),
                    ));
                }
                Ok((stream, _)) => drop(stream), // over the cap: the client sees the connection close
                Err(e) => tracing::warn!("control socket accept failed: {e}"),
            },
        }
    }
    connections.shutdown().await;
}

/// Whether the process at the other end of `stream` runs as the daemon's own user.
fn same_user(stream: &UnixStream) -> bool {
    stream.peer_cred().is_ok_and(|cred| cred.uid() == rustix::process::geteuid().as_raw())
}

async fn connection(
    stream: UnixStream,
    net: crate::net::Handle,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    shutdown: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut out = FramedWrite::new(write, LinesCodec::new());
    let mut notifications: Option<broadcast::Receiver<Event>> = None;
    loop {
        let outgoing = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = next_event(&mut notifications) => match event {
                Some(event) => event.to_notification().to_line(),
                None => continue,
            },
            line = lines.next() => match line {
                None => break,
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    Response::error(None, protocol::PARSE_ERROR, format!("request longer than {MAX_LINE} bytes"), None).to_line()
                }
                Some(Err(LinesCodecError::Io(_))) => break,
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => match protocol::parse_request(&line) {
                    Err(answer) => answer.to_line(),
                    Ok(request) if request.method == protocol::method::Subscribe::NAME => {
                        notifications = Some(events.subscribe());
                        Response::ok(request.id.clone(), serde_json::json!({})).to_line()
                    }
                    Ok(request) => match answer_or_ask(&net, &commands, request).await {
                        Some(answer) => answer.to_line(),
                        None => break, // the daemon is shutting down
                    },
                },
            },
        };
        // `to_line` ends with the newline; the codec adds its own.
        let outgoing = outgoing.trim_end_matches('\n').to_owned();
        if out.send(outgoing).await.is_err() {
            break;
        }
    }
}

/// Answers `request` here when it is a `relay.add` whose address fails the relay check (which
/// takes seconds, so it runs on this connection, not in the daemon's actor); else asks the daemon.
async fn answer_or_ask(
    net: &crate::net::Handle,
    commands: &mpsc::Sender<Command>,
    request: Request,
) -> Option<Response> {
    if request.method == protocol::method::RelayAdd::NAME
        && let Ok(params) = request.params_of::<protocol::method::RelayAdd>()
        && !params.offline
        && let Err(why) = crate::relay_check::check(net, &params.addr).await
    {
        return Some(Response::app_error(
            request.id.clone(),
            protocol::AppError::RelayCheckFailed,
            why,
            None,
        ));
    }
    ask(commands, request).await
}

async fn ask(commands: &mpsc::Sender<Command>, request: Request) -> Option<Response> {
    let (reply, answer) = oneshot::channel();
    commands.send(Command { request, reply }).await.ok()?;
    answer.await.ok()
}

/// The next notification for a subscribed connection; never resolves for one that is not.
async fn next_event(receiver: &mut Option<broadcast::Receiver<Event>>) -> Option<Event> {
    match receiver {
        None => std::future::pending().await,
        Some(rx) => match rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!("a control subscriber missed {missed} notifications");
                None
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        },
    }
}
