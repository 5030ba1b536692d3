//! The blocking client against a real Unix socket served by a test thread that plays the daemon:
//! typed calls, error answers, a missing daemon, subscriptions, timeouts and oversized lines.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use merpati_control::client::Config;
use merpati_control::protocol::{
    AppError, Direction, Event, MAX_LINE, MessageStatus, MessageStatusParams, MessageView, MessagesParams,
    NoParams, Response, SendParams, StatusUpdate, method, parse_request,
};
use merpati_control::{Client, ClientError, Home};
use merpati_proto::Timestamp;

const ID: &str = "00112233445566778899aabbccddeeff";

/// A temp home whose socket is served, one connection at a time, by `serve`.
fn daemon(serve: impl Fn(UnixStream) + Send + 'static) -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path()).unwrap();
    let listener = UnixListener::bind(home.control_socket()).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            serve(stream.unwrap());
        }
    });
    (dir, home)
}

/// Answers each request line with `answer(request)`, writing whatever lines it returns.
fn answering(
    answer: impl Fn(merpati_control::protocol::Request) -> Vec<String> + Send + Clone + 'static,
) -> impl Fn(UnixStream) + Send + 'static {
    move |stream| {
        let answer = answer.clone();
        thread::spawn(move || {
            let mut writer = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let lines = match parse_request(&line) {
                    Ok(request) => answer(request),
                    Err(error) => vec![error.to_line()],
                };
                for line in lines {
                    if writer.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

fn view(text: &str) -> MessageView {
    MessageView {
        id: ID.parse().unwrap(),
        direction: Direction::In,
        contact: "bob".into(),
        time: Timestamp(1_750_000_000_000),
        text: text.into(),
        status: None,
        stored: None,
        reason: None,
        seq: Some(1),
        file: None,
        group: None,
    }
}

#[test]
fn typed_calls_with_increasing_ids() {
    let (_dir, home) = daemon(answering(|request| {
        let line = match request.method.as_str() {
            "send" => {
                let params = request.params_of::<method::Send>().unwrap();
                assert_eq!(params, SendParams { to: "bob".into(), text: "hi".into() });
                Response::ok(request.id, serde_json::json!({ "id": ID }))
            }
            "messages" => {
                let params = request.params_of::<method::Messages>().unwrap();
                assert_eq!(params.limit, Some(2));
                // The id counts calls on this connection: this is the second.
                assert_eq!(request.id, 2u64.into());
                Response::ok(
                    request.id,
                    serde_json::json!({ "messages": [view("one")], "added_later": true }),
                )
            }
            _ => request.method_not_found(),
        };
        vec![line.to_line()]
    }));
    let mut client = Client::connect(&home).unwrap();
    assert_eq!(client.socket(), home.control_socket());
    let sent = client.call::<method::Send>(SendParams { to: "bob".into(), text: "hi".into() }).unwrap();
    assert_eq!(sent.id.as_str(), ID);
    let listed = client
        .call::<method::Messages>(MessagesParams { group: None, with: None, limit: Some(2), before: None })
        .unwrap();
    assert_eq!(listed.messages, vec![view("one")]);
    let err = client.call::<method::Status>(NoParams {}).unwrap_err();
    assert!(matches!(err, ClientError::Remote { code: -32601, .. }), "{err}");
}

#[test]
fn remote_errors_carry_code_message_and_data() {
    let (_dir, home) = daemon(answering(|request| {
        vec![
            Response::app_error(
                request.id,
                AppError::InvalidInvite,
                "the invite is mistyped or cut off: copy the whole line again",
                Some(serde_json::json!({ "position": 12 })),
            )
            .to_line(),
        ]
    }));
    let mut client = Client::connect(&home).unwrap();
    let err = client
        .call::<method::ContactAdd>(merpati_control::protocol::ContactAddParams {
            invite: "MERPATI1:AAAA".into(),
            name: "bob".into(),
        })
        .unwrap_err();
    assert_eq!(err.app_error(), Some(AppError::InvalidInvite));
    assert_eq!(err.to_string(), "the invite is mistyped or cut off: copy the whole line again");
    let ClientError::Remote { code, data, .. } = err else { panic!("not remote") };
    assert_eq!(code, 2);
    assert_eq!(data, Some(serde_json::json!({ "position": 12 })));
}

#[test]
fn daemon_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path()).unwrap();
    let err = Client::connect(&home).unwrap_err();
    assert!(matches!(err, ClientError::DaemonNotRunning { .. }), "{err}");
    let shown = dir.path().display().to_string();
    assert_eq!(
        err.to_string(),
        format!("merpatid is not running for {shown} (start it with: merpatid --home {shown})")
    );

    // A socket file left behind by a daemon that died refuses connections: the same answer.
    drop(UnixListener::bind(home.control_socket()).unwrap());
    assert!(matches!(Client::connect(&home), Err(ClientError::DaemonNotRunning { .. })));
}

#[test]
fn subscribe_streams_typed_events_and_skips_unknown_ones() {
    let (_dir, home) = daemon(answering(|request| {
        assert_eq!(request.method, "subscribe");
        let status = StatusUpdate {
            id: ID.parse().unwrap(),
            status: MessageStatus::Delivered,
            reason: None,
            stored: None,
        };
        vec![
            // A notification sent before the answer must not be lost.
            Event::Message(view("early")).to_notification().to_line(),
            Response::ok(request.id, serde_json::json!({})).to_line(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"typing\",\"params\":{\"contact\":\"bob\"}}\n".to_owned(),
            Event::Status(status).to_notification().to_line(),
            Event::Message(view("later")).to_notification().to_line(),
        ]
    }));
    let mut events = Client::connect(&home).unwrap().subscribe().unwrap();
    assert_eq!(events.next().unwrap().unwrap(), Event::Message(view("early")));
    assert_eq!(
        events.next().unwrap().unwrap(),
        Event::Status(StatusUpdate {
            id: ID.parse().unwrap(),
            status: MessageStatus::Delivered,
            reason: None,
            stored: None,
        })
    );
    assert_eq!(events.next().unwrap().unwrap(), Event::Message(view("later")));

    // Nothing more comes: a timeout, after which the stream is still usable.
    events.set_read_timeout(Some(Duration::from_millis(100)));
    let started = Instant::now();
    assert!(matches!(events.next(), Some(Err(ClientError::Timeout))));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(matches!(events.next_event_until(Instant::now()), Err(ClientError::Timeout)));
}

#[test]
fn stream_ends_when_the_daemon_closes() {
    let (_dir, home) = daemon(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        let request = parse_request(line.trim_end()).unwrap();
        writer.write_all(Response::ok(request.id, serde_json::json!({})).to_line().as_bytes()).unwrap();
        writer.write_all(Event::Message(view("bye")).to_notification().to_line().as_bytes()).unwrap();
        // Dropping both halves closes the connection.
    });
    let events = Client::connect(&home).unwrap().subscribe().unwrap();
    let all: Vec<_> = events.map(Result::unwrap).collect();
    assert_eq!(all, vec![Event::Message(view("bye"))]);
}

#[test]
fn call_times_out_and_skips_the_late_answer() {
    let (_dir, home) = daemon(answering(|request| {
        if request.id == 1u64.into() {
            thread::sleep(Duration::from_millis(300));
        }
        let update =
            StatusUpdate { id: ID.parse().unwrap(), status: MessageStatus::Sent, reason: None, stored: None };
        vec![Response::ok(request.id, update).to_line()]
    }));
    let config = Config::default().with_read_timeout(Some(Duration::from_millis(100)));
    let mut client = Client::connect_with(&home, config).unwrap();
    let params = || MessageStatusParams { id: ID.parse().unwrap() };
    assert!(matches!(client.call::<method::MessageStatus>(params()), Err(ClientError::Timeout)));
    client.set_read_timeout(Some(Duration::from_secs(5)));
    let update = client.call::<method::MessageStatus>(params()).unwrap();
    assert_eq!(update.status, MessageStatus::Sent);
}

#[test]
fn oversized_lines_are_refused_both_ways() {
    let (_dir, home) = daemon(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        let huge = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"invite\":\"{}\"}}}}\n",
            "A".repeat(MAX_LINE)
        );
        let _ = writer.write_all(huge.as_bytes());
    });
    let mut client = Client::connect(&home).unwrap();
    let text = "x".repeat(MAX_LINE);
    let err = client.call::<method::Send>(SendParams { to: "bob".into(), text }).unwrap_err();
    assert!(matches!(err, ClientError::RequestTooLarge { max: MAX_LINE, .. }), "{err}");
    let err = client.call::<method::Invite>(NoParams {}).unwrap_err();
    assert!(matches!(err, ClientError::LineTooLong), "{err}");
}

#[test]
fn garbage_answers_are_protocol_errors() {
    let (_dir, home) = daemon(answering(|request| match request.method.as_str() {
        "status" => vec!["this is not json\n".to_owned()],
        _ => vec![Response::ok(request.id, serde_json::json!({ "invite": 42 })).to_line()],
    }));
    let mut client = Client::connect(&home).unwrap();
    assert!(matches!(client.call::<method::Status>(NoParams {}), Err(ClientError::Protocol { .. })));
    let mut client = Client::connect(&home).unwrap();
    assert!(matches!(client.call::<method::Invite>(NoParams {}), Err(ClientError::Protocol { .. })));
}
