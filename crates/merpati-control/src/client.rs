//! A small blocking client for the control API, over the daemon's Unix socket.
//!
//! One [`Client`] is one connection. [`Client::call`] writes a request line and reads lines until
//! the answer with the request's id arrives; the whole wait is bounded by the read timeout, and
//! every line by [`MAX_LINE`]. [`Client::subscribe`] turns the connection into a
//! [`Notifications`] stream of typed [`Event`]s.
//!
//! Ids count up from 1. An answer with a smaller numeric id is a late answer to an earlier call
//! that timed out, and is skipped rather than mistaken for the current one.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::home::Home;
use crate::protocol::{
    AppError, Event, Id, Incoming, MAX_LINE, Method, NoParams, Notification, Outcome, Request, method,
    parse_incoming,
};

/// How long [`Client::call`] waits for an answer by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write may block by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Notifications kept while a call waits for its answer on a subscribed connection; later ones
/// are dropped.
pub const MAX_EARLY_NOTIFICATIONS: usize = 1024;

/// Client settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config { read_timeout: Some(DEFAULT_READ_TIMEOUT), write_timeout: Some(DEFAULT_WRITE_TIMEOUT) }
    }
}

impl Config {
    /// How long a call waits for its answer, in total; `None` waits forever. Default
    /// [`DEFAULT_READ_TIMEOUT`] (30 s).
    pub fn with_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long one write may block; `None` blocks forever. Default [`DEFAULT_WRITE_TIMEOUT`]
    /// (10 s).
    pub fn with_write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }
}

/// Why a call or a notification read failed. The messages are meant for people.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens on the socket: it does not exist or refuses connections.
    #[error(
        "merpatid is not running for {} (start it with: merpatid --home {})",
        home_of(socket).display(),
        home_of(socket).display()
    )]
    DaemonNotRunning {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// Connecting failed for another reason (permissions, a path too long for a socket, …).
    #[error("cannot connect to merpatid at {}: {source}", socket.display())]
    Connect {
        /// The socket path tried.
        socket: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No answer (or notification) came within the timeout.
    #[error("merpatid did not answer in time")]
    Timeout,
    /// The daemon closed the connection.
    #[error("merpatid closed the connection (did it stop?)")]
    Closed,
    /// The request line would exceed [`MAX_LINE`].
    #[error("the request is {len} bytes long, more than the control API's limit of {max} bytes")]
    RequestTooLarge {
        /// The request's length in bytes.
        len: usize,
        /// [`MAX_LINE`].
        max: usize,
    },
    /// The daemon wrote a line longer than [`MAX_LINE`].
    #[error("merpatid sent a line longer than the control API's limit of {MAX_LINE} bytes")]
    LineTooLong,
    /// The daemon wrote something that is not a valid answer or notification.
    #[error(
        "merpatid sent an answer this client does not understand ({reason}); are merpati and merpatid the same version?"
    )]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The daemon answered with an error. The message is the daemon's, meant for people.
    #[error("{message}")]
    Remote {
        /// The error code (`protocol::*_ERROR` constants or [`AppError::code`]).
        code: i64,
        /// The daemon's message.
        message: String,
        /// Details, if the daemon gave any.
        data: Option<Value>,
    },
    /// Reading or writing the socket failed.
    #[error("the connection to merpatid failed: {0}")]
    Io(#[source] io::Error),
}

impl ClientError {
    /// The application error of a [`ClientError::Remote`], if its code is one.
    pub fn app_error(&self) -> Option<AppError> {
        match self {
            ClientError::Remote { code, .. } => AppError::from_code(*code),
            _ => None,
        }
    }

    fn protocol(reason: impl Into<String>) -> Self {
        ClientError::Protocol { reason: reason.into() }
    }
}

/// The home directory a socket is in, for messages.
fn home_of(socket: &Path) -> &Path {
    socket.parent().unwrap_or(socket)
}

/// A connection to the daemon's control socket.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
    config: Config,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon of `home` with the default [`Config`].
    pub fn connect(home: &Home) -> Result<Client, ClientError> {
        Client::connect_with(home, Config::default())
    }

    /// Connects to the daemon of `home`.
    pub fn connect_with(home: &Home, config: Config) -> Result<Client, ClientError> {
        Client::connect_socket(&home.control_socket(), config)
    }

    /// Connects to the control socket at `socket`.
    pub fn connect_socket(socket: &Path, config: Config) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::DaemonNotRunning { socket: socket.to_owned() }
            }
            _ => ClientError::Connect { socket: socket.to_owned(), source },
        })?;
        stream.set_write_timeout(config.write_timeout.map(at_least_1ms)).map_err(ClientError::Io)?;
        Ok(Client { conn: Connection::new(stream, socket.to_owned()), config, next_id: 1 })
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.conn.socket
    }

    /// Changes how long calls wait for their answer; `None` waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.config.read_timeout = timeout;
    }

    /// Calls method `M` and waits for its result. An error answer is [`ClientError::Remote`].
    pub fn call<M: Method>(&mut self, params: M::Params) -> Result<M::Result, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request::new::<M>(Id::from(id), &params)
            .and_then(|request| request.to_line())
            .map_err(|e| ClientError::protocol(format!("cannot encode the request: {e}")))?;
        let len = line.len() - 1;
        if len > MAX_LINE {
            return Err(ClientError::RequestTooLarge { len, max: MAX_LINE });
        }
        self.conn.write_line(&line)?;
        let deadline = self.config.read_timeout.map(|timeout| Instant::now() + timeout);
        let response = loop {
            let line = self.conn.read_line(deadline)?;
            match parse_incoming(&line).map_err(|e| ClientError::protocol(e.to_string()))? {
                Incoming::Notification(notification) => self.conn.keep_early(notification),
                Incoming::Response(response) => match &response.id {
                    Some(found) if *found == Id::from(id) => break response,
                    Some(Id::Number(n)) if n.as_u64().is_some_and(|n| n < id) => continue,
                    // The daemon could not read our request at all, so it could not echo the id.
                    None if matches!(response.outcome, Outcome::Error(_)) => break response,
                    _ => return Err(ClientError::protocol("an answer to a request that was not made")),
                },
            }
        };
        match response.outcome {
            Outcome::Result(value) => M::Result::deserialize(value)
                .map_err(|e| ClientError::protocol(format!("bad result for {}: {e}", M::NAME))),
            Outcome::Error(error) => {
                Err(ClientError::Remote { code: error.code, message: error.message, data: error.data })
            }
        }
    }

    /// Subscribes and turns the connection into a stream of notifications, which waits forever
    /// for the next one until [`Notifications::set_read_timeout`] says otherwise.
    pub fn subscribe(mut self) -> Result<Notifications, ClientError> {
        self.call::<method::Subscribe>(NoParams {})?;
        Ok(Notifications { conn: self.conn, read_timeout: None, broken: false })
    }
}

/// The notifications of a subscribed connection, typed. As an iterator it ends when the daemon
/// closes the connection or after an error that leaves the stream unreadable; a timeout is an
/// `Err(ClientError::Timeout)` item after which iteration can go on. Notification methods this
/// version does not know are skipped.
#[derive(Debug)]
pub struct Notifications {
    conn: Connection,
    read_timeout: Option<Duration>,
    broken: bool,
}

impl Notifications {
    /// How long [`Notifications::next_event`] (and the iterator) waits; `None` waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// The socket this stream reads from.
    pub fn socket(&self) -> &Path {
        &self.conn.socket
    }

    /// The next event, waiting at most the read timeout.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        let deadline = self.read_timeout.map(|timeout| Instant::now() + timeout);
        self.next_event_by(deadline)
    }

    /// The next event, waiting until `deadline` at most ([`ClientError::Timeout`] after it).
    pub fn next_event_until(&mut self, deadline: Instant) -> Result<Event, ClientError> {
        self.next_event_by(Some(deadline))
    }

    fn next_event_by(&mut self, deadline: Option<Instant>) -> Result<Event, ClientError> {
        if self.broken {
            return Err(ClientError::Closed);
        }
        let result = self.read_event(deadline);
        if let Err(e) = &result {
            // After anything but a timeout the stream's position in the line protocol is lost.
            self.broken = !matches!(e, ClientError::Timeout);
        }
        result
    }

    fn read_event(&mut self, deadline: Option<Instant>) -> Result<Event, ClientError> {
        loop {
            let notification = match self.conn.early.pop_front() {
                Some(notification) => notification,
                None => {
                    let line = self.conn.read_line(deadline)?;
                    match parse_incoming(&line).map_err(|e| ClientError::protocol(e.to_string()))? {
                        Incoming::Notification(notification) => notification,
                        Incoming::Response(_) => {
                            return Err(ClientError::protocol("an answer on a subscribed connection"));
                        }
                    }
                }
            };
            match Event::from_notification(&notification) {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => continue,
                Err(e) => {
                    return Err(ClientError::protocol(format!(
                        "bad {} notification: {e}",
                        notification.method
                    )));
                }
            }
        }
    }
}

impl Iterator for Notifications {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken {
            return None;
        }
        match self.next_event() {
            Err(ClientError::Closed) => None,
            other => Some(other),
        }
    }
}

/// The line protocol over one stream: bounded reads that survive timeouts without losing a
/// partly read line, and whole-line writes.
#[derive(Debug)]
struct Connection {
    reader: BufReader<UnixStream>,
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
    /// Notifications read while waiting for an answer, for the [`Notifications`] stream.
    early: VecDeque<Notification>,
    socket: PathBuf,
}

impl Connection {
    fn new(stream: UnixStream, socket: PathBuf) -> Self {
        Connection { reader: BufReader::new(stream), pending: Vec::new(), early: VecDeque::new(), socket }
    }

    fn keep_early(&mut self, notification: Notification) {
        if self.early.len() < MAX_EARLY_NOTIFICATIONS {
            self.early.push_back(notification);
        }
    }

    fn write_line(&mut self, line: &str) -> Result<(), ClientError> {
        let mut stream = self.reader.get_ref();
        stream.write_all(line.as_bytes()).and_then(|()| stream.flush()).map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(e),
        })
    }

    /// The next line, without its `\n`, read by `deadline` (`None`: no limit).
    fn read_line(&mut self, deadline: Option<Instant>) -> Result<String, ClientError> {
        loop {
            if self.reader.buffer().is_empty() {
                // Only a read from the socket can block, so only then does the deadline apply.
                let timeout = match deadline {
                    None => None,
                    Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => Some(at_least_1ms(left)),
                        _ => return Err(ClientError::Timeout),
                    },
                };
                self.reader.get_ref().set_read_timeout(timeout).map_err(ClientError::Io)?;
            }
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return Err(ClientError::Timeout),
                    io::ErrorKind::ConnectionReset => return Err(ClientError::Closed),
                    _ => return Err(ClientError::Io(e)),
                },
            };
            if available.is_empty() {
                return Err(ClientError::Closed);
            }
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (end, true),
                None => (available.len(), false),
            };
            if self.pending.len() + take > MAX_LINE {
                return Err(ClientError::LineTooLong);
            }
            self.pending.extend_from_slice(&available[..take]);
            self.reader.consume(take + usize::from(complete));
            if complete {
                let line = std::mem::take(&mut self.pending);
                return String::from_utf8(line)
                    .map_err(|_| ClientError::protocol("a line that is not UTF-8"));
            }
        }
    }
}

/// The socket API refuses a zero timeout; the smallest one it accepts is used instead.
fn at_least_1ms(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}
