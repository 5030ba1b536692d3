//! Two people behind NAT routers write to each other through a community relay: real daemons in
//! the network namespaces of `tests/nat/topology.sh`, driven by `tests/nat/scenario.sh`.
//!
//! Behind port-preserving NATs the relayed connection must be upgraded to a direct one by hole
//! punching (DCUtR); behind symmetric NATs (random public ports) messages must still arrive both
//! ways, through the relay. The script prints what it checks (`PASS:`/`FAIL:` lines) and the
//! figures it observes (`figure:` lines); run with `--nocapture` to see them.
//!
//! Network namespaces need root, iproute2 and nftables; where the machine cannot make them the
//! script exits 77 and the tests say so on one line and pass (unless `MERPATI_REQUIRE_NETNS` is
//! set, as `.ci/run` does as root). No packet leaves the namespaces.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use merpati_e2e::{bins, text};

/// Set (as `.ci/run` does as root), a machine that cannot build the topology fails the tests
/// instead of skipping them.
const REQUIRE_NETNS: &str = "MERPATI_REQUIRE_NETNS";

/// The script's exit status for "this machine cannot build the topology".
const SKIP_STATUS: i32 = 77;

fn scenario_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nat").join("scenario.sh")
}

/// A namespace prefix of its own for each run: unique per test process and call, and unlike
/// `mp-<pid>-…` (tests/lan.rs and the harness) or the script's default `mp`.
fn netns_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("mpnat{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `PATH` with the directories `ip` and `nft` usually live in, which not every `PATH` has.
fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")
}

/// Runs the scenario with `args`; passes, skips (exit 77, unless required) or fails with the
/// script's whole output.
fn run_scenario(test: &str, args: &[&str]) {
    let bins = bins();
    let out = Command::new("bash")
        .arg(scenario_script())
        .args(args)
        .env("MERPATID_BIN", &bins.merpatid)
        .env("MERPATI_BIN", &bins.merpati)
        .env("MP_NETNS_PREFIX", netns_prefix())
        .env("PATH", path_with_sbin())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    match out.status.code() {
        Some(0) => {
            // The checks and figures, for --nocapture.
            for line in stdout.lines().filter(|l| l.starts_with("PASS:") || l.starts_with("figure:")) {
                println!("nat::{test}: {line}");
            }
        }
        Some(SKIP_STATUS) => {
            let why = stderr
                .lines()
                .find_map(|l| l.strip_prefix("skipping: "))
                .unwrap_or("the script exited 77 without saying why")
                .to_owned();
            if std::env::var_os(REQUIRE_NETNS).is_some() {
                panic!("{REQUIRE_NETNS} is set, but this machine cannot build the NAT topology: {why}");
            }
            println!("SKIPPED nat::{test}: cannot build the NAT topology on this machine ({why})");
        }
        status => panic!(
            "tests/nat/scenario.sh {} failed ({status:?}):\n---- stdout ----\n{stdout}\n---- stderr ----\n{stderr}",
            args.join(" ")
        ),
    }
}

#[test]
fn behind_normal_nats_messages_arrive_and_dcutr_punches_a_hole() {
    run_scenario("behind_normal_nats_messages_arrive_and_dcutr_punches_a_hole", &[]);
}

#[test]
fn behind_symmetric_nats_messages_still_arrive_through_the_relay() {
    run_scenario("behind_symmetric_nats_messages_still_arrive_through_the_relay", &["--symmetric"]);
}
