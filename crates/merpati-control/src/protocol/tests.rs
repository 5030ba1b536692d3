//! Wire tests for the control protocol: golden lines for every method (so any change to the wire
//! shows up in review), serde round trips, and the answers `parse_request` gives to bad lines.

use merpati_proto::Timestamp;
use proptest::prelude::*;
use serde_json::json;

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef";

fn message_id() -> MessageId {
    ID.parse().unwrap()
}

/// Asserts that `line` is one `\n`-terminated line holding the same JSON as `golden`: the same
/// members with the same types and values. Member order is not compared: it carries no meaning
/// in JSON, and serde_json's map order depends on a feature other crates may turn on.
fn assert_line(line: &str, golden: &str, what: &str) {
    assert!(line.ends_with('\n') && !line.trim_end_matches('\n').contains('\n'), "{what}: {line:?}");
    let found: Value = serde_json::from_str(line).unwrap();
    let expected: Value = serde_json::from_str(golden).unwrap();
    assert_eq!(found, expected, "{what}:\n found  {line}\n golden {golden}");
}

/// Checks that request and response lines of method `M` match the golden strings, and that
/// parsing them gives back the same values.
fn golden<M: Method>(params: M::Params, request: &str, result: M::Result, response: &str) {
    let built = Request::new::<M>(Id::from(1), &params).unwrap();
    assert_line(&built.to_line().unwrap(), request, &format!("request of {}", M::NAME));
    let parsed = parse_request(request).unwrap();
    assert_eq!(parsed, built);
    assert_eq!(parsed.method, M::NAME);
    assert_eq!(parsed.params_of::<M>().unwrap(), params);

    let answer = Response::ok(Id::from(1), &result);
    assert_line(&answer.to_line(), response, &format!("response of {}", M::NAME));
    let parsed: Response = serde_json::from_str(response).unwrap();
    assert_eq!(parsed, answer);
    let Outcome::Result(value) = parsed.outcome else { panic!("not a result") };
    assert_eq!(M::Result::deserialize(value).unwrap(), result);
}

#[test]
fn golden_status() {
    golden::<method::Status>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"status","params":{}}"#,
        StatusResult {
            peer_id: "12D3KooWabc".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            connected: vec!["bob".into()],
            outbox: 2,
            fingerprint: "3f2a 9c01 0000 1111 2222 3333 4444 5555".into(),
            name: Some("Alice".into()),
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"peer_id":"12D3KooWabc","listen":["/ip4/0.0.0.0/tcp/4001"],"connected":["bob"],"outbox":2,"fingerprint":"3f2a 9c01 0000 1111 2222 3333 4444 5555","name":"Alice"}}"#,
    );
}

#[test]
fn golden_invite() {
    golden::<method::Invite>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"invite","params":{}}"#,
        InviteResult { invite: "MERPATI1:ABCDEF".into() },
        r#"{"jsonrpc":"2.0","id":1,"result":{"invite":"MERPATI1:ABCDEF"}}"#,
    );
}

#[test]
fn golden_contact_add() {
    golden::<method::ContactAdd>(
        ContactAddParams { invite: "MERPATI1:ABCDEF".into(), name: "bob".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"contact.add","params":{"invite":"MERPATI1:ABCDEF","name":"bob"}}"#,
        ContactAddResult {
            name: "bob".into(),
            fingerprint: "aaaa".into(),
            safety_number: "01234 56789".into(),
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"name":"bob","fingerprint":"aaaa","safety_number":"01234 56789"}}"#,
    );
}

#[test]
fn golden_contact_list() {
    golden::<method::ContactList>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"contact.list","params":{}}"#,
        ContactListResult {
            contacts: vec![
                ContactSummary {
                    name: "bob".into(),
                    fingerprint: "aaaa".into(),
                    connected: true,
                    last_heard: Some(1_795_219_200_000),
                    unread: 2,
                    restored_at: Some(1_795_219_100_000),
                },
                ContactSummary {
                    name: "carol".into(),
                    fingerprint: "bbbb".into(),
                    connected: false,
                    last_heard: None,
                    unread: 0,
                    restored_at: None,
                },
            ],
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"contacts":[{"name":"bob","fingerprint":"aaaa","connected":true,"last_heard":1795219200000,"unread":2,"restored_at":1795219100000},{"name":"carol","fingerprint":"bbbb","connected":false,"unread":0}]}}"#,
    );
}

#[test]
fn golden_contact_show() {
    golden::<method::ContactShow>(
        ContactShowParams { name: "bob".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"contact.show","params":{"name":"bob"}}"#,
        ContactShowResult {
            name: "bob".into(),
            fingerprint: "aaaa".into(),
            safety_number: "01234 56789".into(),
            peer_id: "12D3KooWbob".into(),
            addrs: vec!["/ip4/192.168.1.7/tcp/4001".into()],
            missing: vec![[5, 6]],
            last_heard: Some(1_795_219_200_000),
            restored_at: None,
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"name":"bob","fingerprint":"aaaa","safety_number":"01234 56789","peer_id":"12D3KooWbob","addrs":["/ip4/192.168.1.7/tcp/4001"],"missing":[[5,6]],"last_heard":1795219200000}}"#,
    );
}

#[test]
fn golden_send() {
    golden::<method::Send>(
        SendParams { to: "bob".into(), text: "hello \"bob\"\n".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"bob","text":"hello \"bob\"\n"}}"#,
        SendResult { id: message_id() },
        r#"{"jsonrpc":"2.0","id":1,"result":{"id":"0123456789abcdef0123456789abcdef"}}"#,
    );
}

#[test]
fn golden_message_status() {
    golden::<method::MessageStatus>(
        MessageStatusParams { id: message_id() },
        r#"{"jsonrpc":"2.0","id":1,"method":"message.status","params":{"id":"0123456789abcdef0123456789abcdef"}}"#,
        StatusUpdate {
            id: message_id(),
            status: MessageStatus::Failed,
            reason: Some("expired".into()),
            stored: None,
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"id":"0123456789abcdef0123456789abcdef","status":"failed","reason":"expired"}}"#,
    );
}

#[test]
fn golden_messages() {
    golden::<method::Messages>(
        MessagesParams { group: None, with: Some("bob".into()), limit: Some(10), before: None },
        r#"{"jsonrpc":"2.0","id":1,"method":"messages","params":{"with":"bob","limit":10}}"#,
        MessagesResult {
            messages: vec![
                MessageView {
                    id: message_id(),
                    direction: Direction::Out,
                    contact: "bob".into(),
                    time: Timestamp(1_750_000_000_000),
                    text: "hi".into(),
                    status: Some(MessageStatus::Delivered),
                    stored: None,
                    reason: None,
                    seq: Some(3),
                    file: None,
                    group: None,
                },
                MessageView {
                    id: "ffffffffffffffffffffffffffffffff".parse().unwrap(),
                    direction: Direction::In,
                    contact: "bob".into(),
                    time: Timestamp(1_750_000_001_000),
                    text: "hey".into(),
                    status: None,
                    stored: None,
                    reason: None,
                    seq: None,
                    file: None,
                    group: None,
                },
            ],
            cut: false,
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"id":"0123456789abcdef0123456789abcdef","direction":"out","contact":"bob","time":1750000000000,"text":"hi","status":"delivered","seq":3},{"id":"ffffffffffffffffffffffffffffffff","direction":"in","contact":"bob","time":1750000001000,"text":"hey"}]}}"#,
    );
    golden::<method::Messages>(
        MessagesParams::default(),
        r#"{"jsonrpc":"2.0","id":1,"method":"messages","params":{}}"#,
        MessagesResult { messages: vec![], cut: false },
        r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[]}}"#,
    );
}

#[test]
fn golden_stored_status() {
    let stored = Some(StoredCount { accepted: 1, total: 2 });
    golden::<method::MessageStatus>(
        MessageStatusParams { id: message_id() },
        r#"{"jsonrpc":"2.0","id":1,"method":"message.status","params":{"id":"0123456789abcdef0123456789abcdef"}}"#,
        StatusUpdate { id: message_id(), status: MessageStatus::Stored, reason: None, stored },
        r#"{"jsonrpc":"2.0","id":1,"result":{"id":"0123456789abcdef0123456789abcdef","status":"stored","stored":{"accepted":1,"total":2}}}"#,
    );
    golden::<method::Messages>(
        MessagesParams::default(),
        r#"{"jsonrpc":"2.0","id":1,"method":"messages","params":{}}"#,
        MessagesResult {
            messages: vec![MessageView {
                id: message_id(),
                direction: Direction::Out,
                contact: "bob".into(),
                time: Timestamp(7),
                text: "hi".into(),
                status: Some(MessageStatus::Stored),
                stored,
                reason: Some("a relay was down".into()),
                seq: Some(1),
                file: None,
                group: None,
            }],
            cut: false,
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"id":"0123456789abcdef0123456789abcdef","direction":"out","contact":"bob","time":7,"text":"hi","status":"stored","stored":{"accepted":1,"total":2},"reason":"a relay was down","seq":1}]}}"#,
    );
    assert_eq!(StoredCount { accepted: 1, total: 2 }.to_string(), "1/2");

    let line = r#"{"jsonrpc":"2.0","method":"status","params":{"id":"0123456789abcdef0123456789abcdef","status":"stored","stored":{"accepted":2,"total":3}}}"#;
    let event = Event::Status(StatusUpdate {
        id: message_id(),
        status: MessageStatus::Stored,
        reason: None,
        stored: Some(StoredCount { accepted: 2, total: 3 }),
    });
    assert_line(&event.to_notification().to_line(), line, "stored status notification");
    let Incoming::Notification(n) = parse_incoming(line).unwrap() else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), Some(event));
}

#[test]
fn golden_request_notification() {
    let line = r#"{"jsonrpc":"2.0","method":"request","params":{"id":"98933361a1d131bc","fingerprint":"9893 3361","suggested_name":"Sari","envelopes":2,"dropped":0,"first_at":7,"last_at":8}}"#;
    let event = Event::Request(RequestView {
        id: "98933361a1d131bc".into(),
        fingerprint: "9893 3361".into(),
        suggested_name: Some("Sari".into()),
        preview: None,
        envelopes: 2,
        dropped: 0,
        first_at: merpati_proto::Timestamp(7),
        last_at: merpati_proto::Timestamp(8),
    });
    assert_line(&event.to_notification().to_line(), line, "request notification");
    let Incoming::Notification(n) = parse_incoming(line).unwrap() else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), Some(event));
}

#[test]
fn json_without_stored_still_parses() {
    // What a daemon from before `stored` existed writes: no `stored` member anywhere.
    let update: StatusUpdate =
        serde_json::from_str(r#"{"id":"0123456789abcdef0123456789abcdef","status":"sent"}"#).unwrap();
    assert_eq!(update.stored, None);
    assert_eq!(update.status, MessageStatus::Sent);
    let view: MessageView = serde_json::from_str(
        r#"{"id":"0123456789abcdef0123456789abcdef","direction":"out","contact":"bob","time":5,"text":"hi","status":"queued"}"#,
    )
    .unwrap();
    assert_eq!(view.stored, None);
    // And nothing is written for it when absent, so older clients see the lines they know.
    assert!(!serde_json::to_string(&update).unwrap().contains("stored"));
    assert!(!serde_json::to_string(&view).unwrap().contains("stored"));
}

#[test]
fn golden_relays() {
    let relays = || RelayListResult {
        relays: vec![
            RelayView {
                addr: "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay1".into(),
                peer_id: "12D3KooWrelay1".into(),
                connected: true,
                reserved: true,
            },
            RelayView {
                addr: "/dns4/relay.example.org/udp/4001/quic-v1/p2p/12D3KooWrelay2".into(),
                peer_id: "12D3KooWrelay2".into(),
                connected: false,
                reserved: false,
            },
        ],
    };
    let result = r#"{"jsonrpc":"2.0","id":1,"result":{"relays":[{"addr":"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay1","peer_id":"12D3KooWrelay1","connected":true,"reserved":true},{"addr":"/dns4/relay.example.org/udp/4001/quic-v1/p2p/12D3KooWrelay2","peer_id":"12D3KooWrelay2","connected":false,"reserved":false}]}}"#;
    golden::<method::RelayAdd>(
        RelayAddParams { addr: "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay1".into(), offline: false },
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.add","params":{"addr":"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWrelay1"}}"#,
        relays(),
        result,
    );
    golden::<method::RelayList>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.list","params":{}}"#,
        relays(),
        result,
    );
    golden::<method::RelayRemove>(
        RelayRemoveParams { relay: "12D3KooWrelay3".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.remove","params":{"relay":"12D3KooWrelay3"}}"#,
        relays(),
        result,
    );
    golden::<method::RelayList>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.list","params":{}}"#,
        RelayListResult { relays: vec![] },
        r#"{"jsonrpc":"2.0","id":1,"result":{"relays":[]}}"#,
    );

    // Misspelt or missing params are refused rather than ignored.
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.add","params":{"address":"/ip4/1.2.3.4/tcp/1"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"relay.add","params":{}}"#,
    ] {
        assert!(parse_request(line).unwrap().params_of::<method::RelayAdd>().is_err(), "{line}");
    }
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"relay.remove","params":{"addr":"x"}}"#;
    assert!(parse_request(line).unwrap().params_of::<method::RelayRemove>().is_err());
}

#[test]
fn golden_relay_errors() {
    for (error, code) in
        [(AppError::InvalidRelayAddress, 8), (AppError::UnknownRelay, 9), (AppError::RelayListFull, 10)]
    {
        let answer = Response::app_error(Id::from(1), error, "m", None);
        assert_line(
            &answer.to_line(),
            &format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"m"}}}}"#),
            "relay error",
        );
    }
    assert_eq!(MAX_RELAYS, 4);
}

#[test]
fn golden_subscribe_and_notifications() {
    golden::<method::Subscribe>(
        NoParams {},
        r#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{}}"#,
        SubscribeResult {},
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
    );

    let message = Event::Message(MessageView {
        id: message_id(),
        direction: Direction::In,
        contact: "bob".into(),
        time: Timestamp(5),
        text: "hi".into(),
        status: None,
        stored: None,
        reason: None,
        seq: Some(1),
        file: None,
        group: None,
    });
    let line = r#"{"jsonrpc":"2.0","method":"message","params":{"id":"0123456789abcdef0123456789abcdef","direction":"in","contact":"bob","time":5,"text":"hi","seq":1}}"#;
    assert_line(&message.to_notification().to_line(), line, "message notification");
    let Incoming::Notification(n) = parse_incoming(line).unwrap() else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), Some(message));

    let status = Event::Status(StatusUpdate {
        id: message_id(),
        status: MessageStatus::Read,
        reason: None,
        stored: None,
    });
    let line = r#"{"jsonrpc":"2.0","method":"status","params":{"id":"0123456789abcdef0123456789abcdef","status":"read"}}"#;
    assert_line(&status.to_notification().to_line(), line, "status notification");
    let Incoming::Notification(n) = parse_incoming(line).unwrap() else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), Some(status));

    let restored = Event::Restored(RestoredNotice { contact: "bob".into(), at: 7 });
    let line = r#"{"jsonrpc":"2.0","method":"restored","params":{"contact":"bob","at":7}}"#;
    assert_line(&restored.to_notification().to_line(), line, "restored notification");
    let Incoming::Notification(n) = parse_incoming(line).unwrap() else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), Some(restored));

    let unknown = parse_incoming(r#"{"jsonrpc":"2.0","method":"typing","params":{}}"#).unwrap();
    let Incoming::Notification(n) = unknown else { panic!("not a notification") };
    assert_eq!(Event::from_notification(&n).unwrap(), None);
}

#[test]
fn golden_backup() {
    let params =
        BackupParams { path: "/home/sari/merpati.backup".into(), passphrase: "a long passphrase".into() };
    assert!(!format!("{params:?}").contains("a long"), "the passphrase stays out of logs");
    golden::<method::Backup>(
        params,
        r#"{"jsonrpc":"2.0","id":1,"method":"backup","params":{"path":"/home/sari/merpati.backup","passphrase":"a long passphrase"}}"#,
        BackupResult {
            path: "/home/sari/merpati.backup".into(),
            contacts: 2,
            messages: 40,
            files: 1,
            bytes: 9000,
        },
        r#"{"jsonrpc":"2.0","id":1,"result":{"path":"/home/sari/merpati.backup","contacts":2,"messages":40,"files":1,"bytes":9000}}"#,
    );
}

#[test]
fn group_methods_match_the_document() {
    let group = GroupView {
        id: "00112233445566778899aabbccddeeff".into(),
        name: "Pasar".into(),
        role: Some(GroupRole::Admin),
        members: vec![
            GroupMemberView {
                name: "you".into(),
                contact: None,
                fingerprint: "AB12".into(),
                role: GroupRole::Admin,
                owner: true,
                me: true,
            },
            GroupMemberView {
                name: "bob".into(),
                contact: Some("bob".into()),
                fingerprint: "CD34".into(),
                role: GroupRole::Member,
                owner: false,
                me: false,
            },
        ],
        unread: 2,
        missing: Vec::new(),
    };
    let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"id":"00112233445566778899aabbccddeeff","name":"Pasar","role":"admin","members":[{"name":"you","fingerprint":"AB12","role":"admin","owner":true,"me":true},{"name":"bob","contact":"bob","fingerprint":"CD34","role":"member"}],"unread":2}}"#;
    golden::<method::GroupCreate>(
        GroupCreateParams { name: "Pasar".into(), members: vec!["bob".into()] },
        r#"{"jsonrpc":"2.0","id":1,"method":"group.create","params":{"name":"Pasar","members":["bob"]}}"#,
        group.clone(),
        answer,
    );
    golden::<method::GroupRemove>(
        GroupMemberParams { group: "Pasar".into(), member: "bob".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"group.remove","params":{"group":"Pasar","member":"bob"}}"#,
        group,
        answer,
    );
    golden::<method::GroupSend>(
        GroupSendParams { group: "0011".into(), text: "pagi".into() },
        r#"{"jsonrpc":"2.0","id":1,"method":"group.send","params":{"group":"0011","text":"pagi"}}"#,
        SendResult { id: message_id() },
        &format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"id":"{}"}}}}"#, message_id()),
    );
    // A group message as `messages` lists it.
    let view = MessageView {
        id: message_id(),
        direction: Direction::In,
        contact: "Pasar".into(),
        time: Timestamp(5),
        text: "pagi".into(),
        status: None,
        stored: None,
        reason: None,
        seq: Some(1),
        file: None,
        group: Some(MessageGroup {
            id: "00112233445566778899aabbccddeeff".into(),
            name: "Pasar".into(),
            from: Some("bob".into()),
            delivered: None,
            members: None,
            read: None,
        }),
    };
    let line = serde_json::to_string(&view).unwrap();
    assert!(
        line.ends_with(r#""group":{"id":"00112233445566778899aabbccddeeff","name":"Pasar","from":"bob"}}"#),
        "{line}"
    );
    for bad in [
        r#"{"jsonrpc":"2.0","id":1,"method":"group.add","params":{"group":"Pasar"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"group.send","params":{"group":"Pasar","text":"x","to":"bob"}}"#,
    ] {
        assert!(parse_request(bad).unwrap().params_of::<method::GroupAdd>().is_err(), "{bad}");
    }
}

#[test]
fn golden_errors() {
    let answer = Response::app_error(
        Id::String("a".into()),
        AppError::UnknownContact,
        "there is no contact named bob",
        Some(json!({"name": "bob"})),
    );
    assert_line(
        &answer.to_line(),
        r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"there is no contact named bob","data":{"name":"bob"}}}"#,
        "application error",
    );
    let answer = Response::error(None, PARSE_ERROR, "not JSON", None);
    assert_line(
        &answer.to_line(),
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"not JSON"}}"#,
        "parse error",
    );
    assert_eq!(serde_json::from_str::<Response>(answer.to_line().trim_end()).unwrap(), answer);
}

#[test]
fn method_names_match_the_document() {
    assert_eq!(
        method::NAMES,
        [
            "status",
            "invite",
            "contact.add",
            "contact.list",
            "contact.show",
            "contact.rename",
            "contact.remove",
            "contact.clear",
            "contact.block",
            "contact.unblock",
            "contact.blocked",
            "requests",
            "requests.accept",
            "requests.reject",
            "requests.block",
            "send",
            "send.file",
            "message.status",
            "message.file",
            "messages",
            "messages.search",
            "messages.read",
            "messages.delete",
            "relay.add",
            "relay.list",
            "relay.remove",
            "subscribe",
            "backup",
            "group.create",
            "group.list",
            "group.show",
            "group.add",
            "group.remove",
            "group.promote",
            "group.rename",
            "group.leave",
            "group.send",
            "group.read"
        ]
    );
}

#[test]
fn error_codes_match_the_document() {
    assert_eq!(
        [PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR],
        [-32700, -32600, -32601, -32602, -32603]
    );
    let codes: Vec<i64> = AppError::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
    for e in AppError::ALL {
        assert_eq!(AppError::from_code(e.code()), Some(e));
    }
    assert_eq!(AppError::from_code(0), None);
    assert_eq!(AppError::from_code(-32600), None);
}

fn error_of(line: &str) -> (Option<Id>, i64) {
    let answer = parse_request(line).unwrap_err();
    let Outcome::Error(error) = answer.outcome else { panic!("not an error") };
    assert!(!error.message.is_empty());
    (answer.id, error.code)
}

#[test]
fn parse_request_refuses_bad_lines_with_the_right_code() {
    assert_eq!(error_of("garbage"), (None, PARSE_ERROR));
    assert_eq!(error_of(""), (None, PARSE_ERROR));
    assert_eq!(error_of("{\"jsonrpc\":\"2.0\",\"id\":1,"), (None, PARSE_ERROR));
    assert_eq!(error_of("[]"), (None, INVALID_REQUEST));
    assert_eq!(error_of("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}]"), (None, INVALID_REQUEST));
    assert_eq!(error_of("42"), (None, INVALID_REQUEST));
    assert_eq!(error_of(r#"{"jsonrpc":"2.0","method":"status"}"#), (None, INVALID_REQUEST));
    assert_eq!(error_of(r#"{"jsonrpc":"2.0","id":null,"method":"status"}"#), (None, INVALID_REQUEST));
    assert_eq!(error_of(r#"{"jsonrpc":"2.0","id":[1],"method":"status"}"#), (None, INVALID_REQUEST));
    assert_eq!(
        error_of(r#"{"jsonrpc":"1.0","id":7,"method":"status"}"#),
        (Some(Id::from(7)), INVALID_REQUEST)
    );
    assert_eq!(error_of(r#"{"id":7,"method":"status"}"#), (Some(Id::from(7)), INVALID_REQUEST));
    assert_eq!(
        error_of(r#"{"jsonrpc":2.0,"id":"x","method":"status"}"#),
        (Some(Id::String("x".into())), INVALID_REQUEST)
    );
    assert_eq!(error_of(r#"{"jsonrpc":"2.0","id":7,"method":5}"#), (Some(Id::from(7)), INVALID_REQUEST));
    assert_eq!(error_of(r#"{"jsonrpc":"2.0","id":7}"#), (Some(Id::from(7)), INVALID_REQUEST));
    assert_eq!(
        error_of(r#"{"jsonrpc":"2.0","id":7,"method":"send","params":"hi"}"#),
        (Some(Id::from(7)), INVALID_REQUEST)
    );
    assert_eq!(
        error_of(r#"{"jsonrpc":"2.0","id":7,"method":"status","extra":1}"#),
        (Some(Id::from(7)), INVALID_REQUEST)
    );

    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"send","params":{{"to":"bob","text":"{}"}}}}"#,
        "a".repeat(MAX_LINE)
    );
    assert_eq!(error_of(&oversized), (None, INVALID_REQUEST));
    // Deep nesting is refused by the JSON parser's recursion limit, not by a stack overflow.
    assert_eq!(error_of(&"[".repeat(100_000)), (None, PARSE_ERROR));
}

#[test]
fn ids_of_every_kind_are_echoed() {
    for (line, id) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#, Id::from(1)),
        (r#"{"jsonrpc":"2.0","id":-3,"method":"status"}"#, Id::Number((-3).into())),
        (r#"{"jsonrpc":"2.0","id":"req-1","method":"status"}"#, Id::String("req-1".into())),
    ] {
        let request = parse_request(line).unwrap();
        assert_eq!(request.id, id);
        assert_eq!(Response::ok(request.id.clone(), SubscribeResult {}).id, Some(id));
    }
}

#[test]
fn params_are_checked() {
    let params_error = |line: &str| {
        let request = parse_request(line).unwrap();
        let answer = request.params_of::<method::Send>().unwrap_err();
        assert_eq!(answer.id, Some(request.id));
        let Outcome::Error(error) = answer.outcome else { panic!("not an error") };
        error.code
    };
    assert_eq!(
        params_error(r#"{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"bob"}}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        params_error(
            r#"{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"bob","text":"x","urgent":true}}"#
        ),
        INVALID_PARAMS
    );
    assert_eq!(
        params_error(r#"{"jsonrpc":"2.0","id":1,"method":"send","params":["bob","x"]}"#),
        INVALID_PARAMS
    );
    assert_eq!(params_error(r#"{"jsonrpc":"2.0","id":1,"method":"send"}"#), INVALID_PARAMS);

    // Methods without params accept absent, null and empty params, and nothing else.
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"status","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"status","params":{}}"#,
    ] {
        assert_eq!(parse_request(line).unwrap().params_of::<method::Status>().unwrap(), NoParams {});
    }
    let request = parse_request(r#"{"jsonrpc":"2.0","id":1,"method":"status","params":{"x":1}}"#).unwrap();
    assert!(request.params_of::<method::Status>().is_err());

    let request =
        parse_request(r#"{"jsonrpc":"2.0","id":1,"method":"message.status","params":{"id":"ABC"}}"#).unwrap();
    assert!(request.params_of::<method::MessageStatus>().is_err());

    let request = parse_request(r#"{"jsonrpc":"2.0","id":9,"method":"frobnicate"}"#).unwrap();
    let answer = request.method_not_found();
    assert_eq!(answer.id, Some(Id::from(9)));
    assert!(matches!(answer.outcome, Outcome::Error(ErrorObject { code: METHOD_NOT_FOUND, .. })));
}

#[test]
fn small_types_round_trip() {
    for status in MessageStatus::ALL {
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(text, format!("\"{status}\""));
        assert_eq!(serde_json::from_str::<MessageStatus>(&text).unwrap(), status);
        assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
    }
    assert!("QUEUED".parse::<MessageStatus>().is_err());
    for direction in [Direction::In, Direction::Out] {
        let text = serde_json::to_string(&direction).unwrap();
        assert_eq!(text, format!("\"{direction}\""));
        assert_eq!(serde_json::from_str::<Direction>(&text).unwrap(), direction);
    }
    let id = MessageId::from_bytes([0xab; 16]);
    assert_eq!(id.as_str(), "abababababababababababababababab");
    assert_eq!(id.to_bytes(), [0xab; 16]);
    assert_eq!(serde_json::from_str::<MessageId>(&serde_json::to_string(&id).unwrap()).unwrap(), id);
    for bad in ["", "ABABABABABABABABABABABABABABABAB", "abab", "zzababababababababababababababab", "\"x\""] {
        assert!(bad.parse::<MessageId>().is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<MessageId>("\"0123\"").is_err());
    let error = ErrorObject { code: 3, message: "too large".into(), data: Some(json!({"max": 15360})) };
    assert_eq!(serde_json::from_value::<ErrorObject>(serde_json::to_value(&error).unwrap()).unwrap(), error);
}

#[test]
fn status_progress() {
    use MessageStatus::*;
    assert!(Delivered.has_reached(Sent));
    assert!(Read.has_reached(Delivered));
    assert!(Sent.has_reached(Sent));
    assert!(!Queued.has_reached(Sent));
    assert!(!Failed.has_reached(Sent));
    assert!(Failed.has_reached(Failed));
    assert!(!Read.has_reached(Failed));
    assert!(Read.is_final() && Failed.is_final() && !Delivered.is_final());

    // `stored` is `sent` reached through the contact's relays: each satisfies the other.
    assert!(Stored.has_reached(Sent) && Sent.has_reached(Stored) && Stored.has_reached(Stored));
    assert!(Stored.has_reached(Queued) && !Queued.has_reached(Stored));
    assert!(!Stored.has_reached(Delivered) && Delivered.has_reached(Stored) && Read.has_reached(Stored));
    assert!(!Stored.has_reached(Failed) && !Failed.has_reached(Stored) && !Stored.is_final());
    assert_eq!(Stored.as_str(), "stored");
    assert_eq!("stored".parse::<MessageStatus>(), Ok(Stored));
}

#[test]
fn names_are_checked() {
    assert_eq!(check_name("bob"), Ok(()));
    assert_eq!(check_name(&"é".repeat(64)), Ok(()));
    assert_eq!(check_name(""), Err(NameError::Empty));
    assert_eq!(check_name(&"x".repeat(65)), Err(NameError::TooLong { chars: 65 }));
    assert_eq!(check_name("a\tb"), Err(NameError::ControlCharacter));
    assert_eq!(check_name("a\u{1b}[31m"), Err(NameError::ControlCharacter));
}

#[test]
fn messages_limit() {
    assert_eq!(MessagesParams::default().effective_limit(), DEFAULT_MESSAGES_LIMIT);
    assert_eq!(MessagesParams { group: None, with: None, limit: Some(5), before: None }.effective_limit(), 5);
    assert_eq!(
        MessagesParams { group: None, with: None, limit: Some(50_000), before: None }.effective_limit(),
        MAX_MESSAGES_LIMIT
    );
}

fn arb_view() -> impl Strategy<Value = MessageView> {
    (
        any::<[u8; 16]>(),
        any::<bool>(),
        ".{0,20}",
        any::<u64>(),
        ".{0,50}",
        proptest::option::of(proptest::sample::select(MessageStatus::ALL.to_vec())),
        proptest::option::of(any::<u64>()),
        proptest::option::of(arb_stored()),
        proptest::option::of(".{0,30}"),
    )
        .prop_map(|(id, incoming, contact, time, text, status, seq, stored, reason)| MessageView {
            id: MessageId::from_bytes(id),
            direction: if incoming { Direction::In } else { Direction::Out },
            contact,
            time: Timestamp(time),
            text,
            status,
            stored,
            reason,
            seq,
            file: None,
            group: None,
        })
}

fn arb_stored() -> impl Strategy<Value = StoredCount> {
    (any::<u32>(), any::<u32>()).prop_map(|(accepted, total)| StoredCount { accepted, total })
}

proptest! {
    #[test]
    fn views_and_events_round_trip(
        view in arb_view(),
        reason in proptest::option::of(".{0,30}"),
        stored in proptest::option::of(arb_stored()),
    ) {
        let text = serde_json::to_string(&view).unwrap();
        prop_assert_eq!(serde_json::from_str::<MessageView>(&text).unwrap(), view.clone());
        for event in [
            Event::Message(view.clone()),
            Event::Status(StatusUpdate {
                id: view.id.clone(),
                status: MessageStatus::Failed,
                reason,
                stored: None,
            }),
            Event::Status(StatusUpdate {
                id: view.id.clone(),
                status: MessageStatus::Stored,
                reason: None,
                stored,
            }),
        ] {
            let line = event.to_notification().to_line();
            let Incoming::Notification(n) = parse_incoming(line.trim_end()).unwrap() else {
                panic!("not a notification")
            };
            prop_assert_eq!(Event::from_notification(&n).unwrap(), Some(event));
        }
    }

    #[test]
    fn requests_round_trip(
        id in prop_oneof![any::<u64>().prop_map(Id::from), ".{0,10}".prop_map(Id::String)],
        to in ".{0,20}",
        text in ".{0,100}",
    ) {
        let request = Request::new::<method::Send>(id, &SendParams { to, text }).unwrap();
        let line = request.to_line().unwrap();
        prop_assert_eq!(parse_request(line.trim_end()).unwrap(), request);
    }

    #[test]
    fn parse_request_never_panics(line in ".{0,200}") {
        let _ = parse_request(&line);
        let _ = parse_incoming(&line);
    }

    #[test]
    fn parse_request_never_panics_on_near_misses(
        id in prop_oneof![Just("1".to_owned()), Just("null".to_owned()), Just("\"a\"".to_owned()), Just("{}".to_owned()), Just("1.5".to_owned())],
        version in prop_oneof![Just("\"2.0\"".to_owned()), Just("\"1.0\"".to_owned()), Just("2".to_owned())],
        method in prop_oneof![Just("\"send\"".to_owned()), Just("7".to_owned()), Just("null".to_owned())],
        params in prop_oneof![Just("{}".to_owned()), Just("[]".to_owned()), Just("\"p\"".to_owned()), Just("{\"to\":1}".to_owned())],
    ) {
        let line = format!(r#"{{"jsonrpc":{version},"id":{id},"method":{method},"params":{params}}}"#);
        if let Ok(request) = parse_request(&line) {
            let _ = request.params_of::<method::Send>();
        }
    }
}
