//! The chat's live link to merpatid: a thread that holds a subscription, forwards what the
//! daemon announces, and when the daemon goes away says so and reconnects.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::Duration;

use merpati_control::protocol::Event;
use merpati_control::{Client, ClientError, Home};

/// How many updates wait for the screen before the link waits too. The screen drains them every
/// few milliseconds; what the daemon drops for a reader that falls far behind is still in its
/// store, and reopening a conversation reads it.
const BACKLOG: usize = 1024;
/// How long the link waits between attempts to reach a daemon that is gone.
const RETRY: Duration = Duration::from_millis(500);

/// What the link reports to the screen.
#[derive(Debug)]
pub(crate) enum Update {
    /// Subscribed (again): anything missed while away must be read afresh.
    Connected,
    /// The daemon cannot be reached, and why; the link keeps trying.
    Lost(String),
    /// Something the daemon announced (boxed: a message's view is large).
    Event(Box<Event>),
}

/// Starts the link to `home`'s daemon. The thread ends when the receiver is dropped and the
/// next update cannot be delivered, or with the process.
pub(crate) fn spawn(home: Home) -> std::io::Result<Receiver<Update>> {
    let (updates, receiver) = sync_channel(BACKLOG);
    thread::Builder::new().name("merpati-chat-link".into()).spawn(move || follow(&home, &updates))?;
    Ok(receiver)
}

/// Subscribes, forwards, and on any break reports it once and tries again.
fn follow(home: &Home, updates: &SyncSender<Update>) {
    let mut reported_down = false;
    loop {
        let reason = match Client::connect(home).and_then(Client::subscribe) {
            Ok(events) => {
                reported_down = false;
                if updates.send(Update::Connected).is_err() {
                    return;
                }
                forward(events, updates)
            }
            Err(e) => e,
        };
        if !reported_down {
            if updates.send(Update::Lost(reason.to_string())).is_err() {
                return;
            }
            reported_down = true;
        }
        thread::sleep(RETRY);
    }
}

/// Forwards events until the stream breaks; answers why it broke.
fn forward(events: merpati_control::Notifications, updates: &SyncSender<Update>) -> ClientError {
    for event in events {
        match event {
            Ok(event) => {
                if updates.send(Update::Event(Box::new(event))).is_err() {
                    return ClientError::Closed;
                }
            }
            Err(e) => return e,
        }
    }
    ClientError::Closed
}
