//! Replays the cacophony Noise test vectors for NDR1's two handshake patterns through our wrappers.
//!
//! For every vector of `Noise_X_25519_ChaChaPoly_BLAKE2s` (first contact) and
//! `Noise_Npsk0_25519_ChaChaPoly_BLAKE2s` (epoch open):
//!
//! 1. both sides are built with [`StrictResolver`] (our X25519, no RNG: the initiator's ephemeral is
//!    the vector's fixed one), the handshake message is written and read, and ciphertext, payload
//!    and handshake hash are compared with the vector;
//! 2. the responder side is replayed once more through the crate's own reader
//!    (`first_contact_read` or `epoch_open_read`), which must agree on payload, hash and keys;
//! 3. the raw split keys of both sides are taken, and every transport message of the vector is
//!    sealed and opened with [`TransportCipher`] under those keys with nonces 0, 1, 2, …, exactly as
//!    NDR1 rebuilds transport encryption from stored keys.
//!
//! The vectors are not kept in this repository: they ship inside the `snow` package, whose
//! location comes from `cargo metadata`. A missing file fails the test.

use std::path::PathBuf;
use std::process::Command;

use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::noise::{self, EPOCH_PATTERN, FIRST_CONTACT_PATTERN, StrictResolver, TransportCipher};
use serde::Deserialize;
use snow::params::{HandshakeModifier, NoiseParams};
use snow::{Builder, HandshakeState};

/// Where the vectors sit inside the snow package.
const VECTORS_PATH: &str = "tests/vectors/cacophony.txt";

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

/// One cacophony vector. Keys, prologues and messages are hex; absent keys are not used by the
/// pattern.
#[derive(Deserialize)]
struct Vector {
    protocol_name: String,
    init_prologue: String,
    #[serde(default)]
    init_psks: Vec<String>,
    #[serde(default)]
    init_static: Option<String>,
    init_ephemeral: String,
    #[serde(default)]
    init_remote_static: Option<String>,
    resp_prologue: String,
    #[serde(default)]
    resp_psks: Vec<String>,
    #[serde(default)]
    resp_static: Option<String>,
    #[serde(default)]
    resp_ephemeral: Option<String>,
    #[serde(default)]
    resp_remote_static: Option<String>,
    handshake_hash: String,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    payload: String,
    ciphertext: String,
}

fn unhex(field: &str, value: &str) -> Vec<u8> {
    hex::decode(value).unwrap_or_else(|e| panic!("{field} is not hex: {e}"))
}

fn unhex32(field: &str, value: &str) -> [u8; 32] {
    unhex(field, value).try_into().unwrap_or_else(|_| panic!("{field} is not 32 bytes"))
}

/// The directory of the `snow` package this crate builds against, from `cargo metadata`.
fn snow_package_dir() -> PathBuf {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    // Restricting the resolve to the host platform keeps cargo from downloading packages that
    // only other platforms need; cargo versions without `host-tuple` get the full resolve.
    let attempts: [&[&str]; 2] = [&["--filter-platform", "host-tuple"], &[]];
    let mut errors = Vec::new();
    for extra in attempts {
        let output = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1"])
            .args(extra)
            .current_dir(manifest_dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `cargo metadata`: {e}"));
        if !output.status.success() {
            errors.push(String::from_utf8_lossy(&output.stderr).into_owned());
            continue;
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("`cargo metadata` printed invalid JSON");
        let packages = metadata["packages"].as_array().expect("`cargo metadata` lists no packages");
        let manifest = packages
            .iter()
            .find(|p| p["name"] == "snow")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("`cargo metadata` does not list the snow package");
        return PathBuf::from(manifest).parent().expect("snow's manifest path has no parent").to_owned();
    }
    panic!("`cargo metadata` failed:\n{}", errors.join("\n"));
}

fn load_vectors() -> Vec<Vector> {
    let path = snow_package_dir().join(VECTORS_PATH);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the cacophony vectors at {}: {e}. They ship inside the snow package on \
             crates.io; run `cargo fetch` and check that the snow version in Cargo.lock still \
             includes {VECTORS_PATH}",
            path.display()
        )
    });
    let file: VectorFile = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a cacophony vector file: {e}", path.display()));
    file.vectors
}

/// Builds both handshake states of `v` with the strict resolver.
fn handshake_states(v: &Vector, params: &NoiseParams) -> (HandshakeState, HandshakeState) {
    let init_prologue = unhex("init_prologue", &v.init_prologue);
    let resp_prologue = unhex("resp_prologue", &v.resp_prologue);
    let init_e = unhex("init_ephemeral", &v.init_ephemeral);
    let resp_e = v.resp_ephemeral.as_deref().map(|k| unhex("resp_ephemeral", k));
    let init_s = v.init_static.as_deref().map(|k| unhex("init_static", k));
    let resp_s = v.resp_static.as_deref().map(|k| unhex("resp_static", k));
    let init_rs = v.init_remote_static.as_deref().map(|k| unhex("init_remote_static", k));
    let resp_rs = v.resp_remote_static.as_deref().map(|k| unhex("resp_remote_static", k));
    let init_psks: Vec<[u8; 32]> = v.init_psks.iter().map(|k| unhex32("init_psks", k)).collect();
    let resp_psks: Vec<[u8; 32]> = v.resp_psks.iter().map(|k| unhex32("resp_psks", k)).collect();

    let mut init = Builder::with_resolver(params.clone(), StrictResolver::boxed(None))
        .prologue(&init_prologue)
        .expect("initiator prologue")
        .fixed_ephemeral_key_for_testing_only(&init_e);
    let mut resp = Builder::with_resolver(params.clone(), StrictResolver::boxed(None))
        .prologue(&resp_prologue)
        .expect("responder prologue");
    if let Some(e) = &resp_e {
        resp = resp.fixed_ephemeral_key_for_testing_only(e);
    }

    // The vector lists PSKs in the order their modifiers appear in the pattern name.
    let locations: Vec<u8> = params
        .handshake
        .modifiers
        .list
        .iter()
        .filter_map(|m| if let HandshakeModifier::Psk(n) = m { Some(*n) } else { None })
        .collect();
    assert_eq!(locations.len(), init_psks.len(), "{}: initiator PSK count", v.protocol_name);
    assert_eq!(locations.len(), resp_psks.len(), "{}: responder PSK count", v.protocol_name);
    for (i, &location) in locations.iter().enumerate() {
        init = init.psk(location, &init_psks[i]).expect("initiator psk");
        resp = resp.psk(location, &resp_psks[i]).expect("responder psk");
    }
    if let Some(k) = &init_s {
        init = init.local_private_key(k).expect("initiator static");
    }
    if let Some(k) = &resp_s {
        resp = resp.local_private_key(k).expect("responder static");
    }
    if let Some(k) = &init_rs {
        init = init.remote_public_key(k).expect("initiator remote static");
    }
    if let Some(k) = &resp_rs {
        resp = resp.remote_public_key(k).expect("responder remote static");
    }
    (init.build_initiator().expect("build initiator"), resp.build_responder().expect("build responder"))
}

/// Reads the (single, both patterns being one-way) handshake message of `v` with the crate's own
/// reader for its pattern and checks payload, sender key, handshake hash and raw split.
fn check_with_crate_reader(v: &Vector, expected_hash: &[u8], k1: &[u8; 32], k2: &[u8; 32]) {
    let message = unhex("ciphertext", &v.messages[0].ciphertext);
    let payload = unhex("payload", &v.messages[0].payload);
    let prologue = unhex("resp_prologue", &v.resp_prologue);
    let local = X25519Secret::from_bytes(unhex32(
        "resp_static",
        v.resp_static.as_deref().expect("pattern needs a responder static key"),
    ));
    let (got_payload, split) = if v.protocol_name == FIRST_CONTACT_PATTERN {
        let (got_payload, remote, split) =
            noise::first_contact_read(&local, &prologue, &message).expect("first_contact_read");
        let init_s = X25519Secret::from_bytes(unhex32(
            "init_static",
            v.init_static.as_deref().expect("pattern needs an initiator static key"),
        ));
        assert_eq!(remote, init_s.public(), "{}: sender static key", v.protocol_name);
        (got_payload, split)
    } else {
        let psk = SymmetricKey::from_bytes(unhex32("resp_psks", &v.resp_psks[0]));
        noise::epoch_open_read(&psk, &local, &prologue, &message).expect("epoch_open_read")
    };
    assert_eq!(&got_payload[..], &payload[..], "{}: payload via crate reader", v.protocol_name);
    assert_eq!(&split.handshake_hash[..], expected_hash, "{}: hash via crate reader", v.protocol_name);
    assert_eq!(split.k1.as_bytes(), k1, "{}: k1 via crate reader", v.protocol_name);
    assert_eq!(split.k2.as_bytes(), k2, "{}: k2 via crate reader", v.protocol_name);
}

fn check_vector(v: &Vector) {
    let name = &v.protocol_name;
    let params: NoiseParams = name.parse().expect("protocol name");
    let (mut init, mut resp) = handshake_states(v, &params);

    // Handshake messages alternate initiator, responder, … until the handshake is finished.
    let mut messages = v.messages.iter().enumerate();
    let mut buf = vec![0u8; noise::MAX_NOISE_MESSAGE];
    let mut out = vec![0u8; noise::MAX_NOISE_MESSAGE];
    while !init.is_handshake_finished() {
        let (i, m) = messages.next().unwrap_or_else(|| panic!("{name}: vector ends inside the handshake"));
        let (sender, receiver) = if i % 2 == 0 { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
        let payload = unhex("payload", &m.payload);
        let len =
            sender.write_message(&payload, &mut buf).unwrap_or_else(|e| panic!("{name}: write {i}: {e}"));
        assert_eq!(hex::encode(&buf[..len]), m.ciphertext, "{name}: handshake message {i} ciphertext");
        let got =
            receiver.read_message(&buf[..len], &mut out).unwrap_or_else(|e| panic!("{name}: read {i}: {e}"));
        assert_eq!(&out[..got], &payload[..], "{name}: handshake message {i} payload");
    }
    assert!(resp.is_handshake_finished(), "{name}: responder not finished");
    assert_eq!(hex::encode(init.get_handshake_hash()), v.handshake_hash, "{name}: initiator handshake hash");
    assert_eq!(hex::encode(resp.get_handshake_hash()), v.handshake_hash, "{name}: responder handshake hash");
    let expected_hash = unhex("handshake_hash", &v.handshake_hash);

    let (init_k1, init_k2) = init.dangerously_get_raw_split();
    let (resp_k1, resp_k2) = resp.dangerously_get_raw_split();
    assert_eq!(init_k1, resp_k1, "{name}: k1 differs between the sides");
    assert_eq!(init_k2, resp_k2, "{name}: k2 differs between the sides");
    check_with_crate_reader(v, &expected_hash, &init_k1, &init_k2);

    // Transport: k1 carries initiator → responder, k2 the reverse; one-way patterns only use k1.
    let initiator_sends = SymmetricKey::from_bytes(init_k1);
    let responder_sends = SymmetricKey::from_bytes(init_k2);
    let one_way = params.handshake.pattern.is_oneway();
    let mut cipher = TransportCipher::new().expect("transport cipher");
    let mut nonces = [0u64; 2];
    for (i, m) in messages {
        let direction = usize::from(!one_way && i % 2 == 1);
        let key = if direction == 0 { &initiator_sends } else { &responder_sends };
        let nonce = nonces[direction];
        nonces[direction] += 1;
        let payload = unhex("payload", &m.payload);
        let sealed = cipher.seal(key, nonce, &payload).unwrap_or_else(|e| panic!("{name}: seal {i}: {e}"));
        assert_eq!(hex::encode(&sealed), m.ciphertext, "{name}: transport message {i} (nonce {nonce})");
        let ciphertext = unhex("ciphertext", &m.ciphertext);
        let opened = cipher.open(key, nonce, &ciphertext).unwrap_or_else(|e| panic!("{name}: open {i}: {e}"));
        assert_eq!(&opened[..], &payload[..], "{name}: transport message {i} payload");
        assert!(
            cipher.open(key, nonce + 1, &ciphertext).is_err(),
            "{name}: message {i} opens under a wrong nonce"
        );
    }
    assert!(nonces[0] > 0, "{name}: vector has no transport messages");
}

#[test]
fn cacophony_vectors_for_ndr1_patterns() {
    let vectors = load_vectors();
    assert!(!vectors.is_empty(), "the cacophony vector file holds no vectors");
    let mut checked = [0usize; 2];
    for v in &vectors {
        let slot = match v.protocol_name.as_str() {
            FIRST_CONTACT_PATTERN => 0,
            EPOCH_PATTERN => 1,
            _ => continue,
        };
        check_vector(v);
        checked[slot] += 1;
    }
    assert!(checked[0] > 0, "no {FIRST_CONTACT_PATTERN} vector was checked");
    assert!(checked[1] > 0, "no {EPOCH_PATTERN} vector was checked");
}
