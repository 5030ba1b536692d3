#!/usr/bin/env bash
# Two people behind NAT write to each other through a community relay, with real daemons in the
# network namespaces of tests/nat/topology.sh.
#
#   tests/nat/scenario.sh              normal NAT (port-preserving masquerade on both routers)
#   tests/nat/scenario.sh --symmetric  symmetric NAT (`masquerade fully-random` on both routers)
#
# What it does: builds the topology; starts the relay (`merpatid --relay`) in mp-pub on
# 198.51.100.10:4001 (TCP and QUIC), Alice's node in mp-a and Bob's in mp-b (TCP and QUIC on the
# same fixed port 4001, mDNS off); both add the relay and wait until it holds their reservation;
# they exchange invites (taken after the relay was added, so they name the relay), and write to
# each other both ways.
#
# What it shows (each check prints PASS or FAIL; the figures are printed as "figure: ..."):
#   both modes   every message arrives on the other side and its sender sees it delivered (or
#                read): the private addresses in the invites are unreachable, so this goes through
#                the relay (a relayed connection, or the mailbox).
#   normal NAT   DCUtR upgrades the relayed connection to a direct one: the line
#                "hole punched: direct connection upgraded from a relayed one" appears in Alice's
#                or Bob's log within HOLE_PUNCH_DEADLINE seconds of the first delivery; and a
#                message written after that arrives too.
#   symmetric    hole punching is not required (it should fail); whether it happened is reported.
#
# Environment:
#   MERPATID_BIN, MERPATI_BIN  the daemon and the CLI (default: target/debug/ of this checkout, or
#                              of $CARGO_TARGET_DIR)
#   MP_NETNS_PREFIX            namespace prefix (default mp; see topology.sh), for parallel runs
#   MP_RUST_LOG                the daemons' RUST_LOG (default: merpati_node=debug,libp2p_dcutr=debug)
#   MP_DELAY_MS                netem delay on the NAT routers' public links (default 5)
#   MP_KEEP_WORKDIR=1          keep the homes and logs (the path is printed) instead of removing them
#
# Exit codes: 0 every check passed; 1 a check failed (the daemons' logs follow); 77 this machine
# cannot build the topology ("skipping: <reason>" on stderr), as topology.sh; 2 bad usage.
# Daemons are stopped and the topology is torn down on every exit.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=topology.sh
source "$here/topology.sh"

mode=normal
while (($#)); do
    case "$1" in
        --symmetric) mode=symmetric ;;
        -h | --help)
            sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "usage: $0 [--symmetric]" >&2
            exit 2
            ;;
    esac
    shift
done

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
MERPATID_BIN="${MERPATID_BIN:-$target_dir/debug/merpatid}"
MERPATI_BIN="${MERPATI_BIN:-$target_dir/debug/merpati}"
MP_RUST_LOG="${MP_RUST_LOG:-merpati_node=debug,libp2p_dcutr=debug}"
MP_DELAY_MS="${MP_DELAY_MS:-5}"

# Seconds: a daemon's start, reservations at the relay, one `send --wait delivered`, and the
# hole punch after the first delivery.
START_DEADLINE=30
RESERVE_DEADLINE=60
DELIVERY_DEADLINE=90
HOLE_PUNCH_DEADLINE=45

PORT=4001
RELAY_TCP="/ip4/$MP_RELAY_IP/tcp/$PORT"
RELAY_QUIC="/ip4/$MP_RELAY_IP/udp/$PORT/quic-v1"
HOLE_PUNCHED="hole punched: direct connection upgraded from a relayed one"
HOLE_PUNCH_FAILED="hole punching failed; staying relayed"

failures=0
pass() { echo "PASS: $*"; }
fail_check() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
# A failure that ends the scenario at once: the logs, then exit 1.
die() {
    echo "FAIL: $*"
    show_logs
    echo "NAT-SCENARIO ($mode): FAILED"
    exit 1
}

if ! why=$(mp_probe); then
    echo "skipping: $why" >&2
    exit "$MP_SKIP_STATUS"
fi

for bin in "$MERPATID_BIN" "$MERPATI_BIN"; do
    if [[ ! -x "$bin" ]]; then
        echo "FAIL: $bin is missing (build with: cargo build -p merpati-node -p merpati-cli, or set MERPATID_BIN and MERPATI_BIN)" >&2
        exit 1
    fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/merpati-nat.XXXXXX")"
declare -A pids=()

cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    for name in "${!pids[@]}"; do
        kill -TERM "${pids[$name]}" 2>/dev/null || true
    done
    for name in "${!pids[@]}"; do
        # A daemon that does not stop within 10 s is killed.
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "${pids[$name]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pids[$name]}" 2>/dev/null || true
        wait "${pids[$name]}" 2>/dev/null || true
    done
    mp_topology_down >/dev/null 2>&1 || mp_topology_down || true
    if [[ -n "${MP_KEEP_WORKDIR:-}" ]]; then
        echo "kept the homes and logs in $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The end of every daemon's log, for a failure.
show_logs() {
    local name
    for name in relay alice bob; do
        [[ -f "$work/$name.log" ]] || continue
        echo "---- $name's log (last 120 lines of $(wc -l <"$work/$name.log")) ----"
        tail -n 120 "$work/$name.log"
    done
    echo "---- end of logs ----"
}

now() { date +%s.%N; }
# Seconds since $1, one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The CLI for home $1 (the control socket is a file in the home, so no namespace is needed).
cli() {
    local name="$1"
    shift
    "$MERPATI_BIN" --home "$work/$name" "$@"
}

# Starts a daemon: name $1, namespace $2, then merpatid's arguments. Waits for its startup line.
start_daemon() {
    local name="$1" ns="$2" i
    shift 2
    RUST_LOG="$MP_RUST_LOG" ip netns exec "$ns" "$MERPATID_BIN" --home "$work/$name" "$@" \
        >"$work/$name.out" 2>"$work/$name.log" &
    pids[$name]=$!
    for ((i = 0; i < START_DEADLINE * 10; i++)); do
        if [[ -s "$work/$name.out" ]] && grep -q '"peer_id"' "$work/$name.out"; then
            return 0
        fi
        kill -0 "${pids[$name]}" 2>/dev/null || die "$name's daemon exited before it was ready"
        sleep 0.1
    done
    die "$name's daemon printed no startup line within ${START_DEADLINE}s"
}

peer_id_of() { grep -o '"peer_id":"[^"]*"' "$work/$1.out" | head -n 1 | cut -d'"' -f4; }

# Waits until `relay list` of $1 shows the relay reserved; prints the seconds it took.
wait_reserved() {
    local name="$1" started i
    started=$(now)
    for ((i = 0; i < RESERVE_DEADLINE * 5; i++)); do
        if cli "$name" --json relay list 2>/dev/null | grep -q '"reserved":true'; then
            since "$started"
            return 0
        fi
        sleep 0.2
    done
    echo "$name's relay list after ${RESERVE_DEADLINE}s:" >&2
    cli "$name" relay list >&2 || true
    return 1
}

# The time (Unix seconds) of the first line of $1's log that contains $2, or nothing.
log_time() {
    local stamp
    stamp=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$1.log" | grep -F -m 1 "$2" | grep -oE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z' || true)
    if [[ -n "$stamp" ]]; then
        date -d "$stamp" +%s.%N 2>/dev/null || true
    fi
}

# Sends text $3 from $1 to contact $2 and waits until it is delivered; prints the seconds taken.
send_delivered() {
    local from="$1" to="$2" text="$3" started out
    started=$(now)
    if ! out=$(cli "$from" send "$to" --wait delivered --timeout "$DELIVERY_DEADLINE" -- "$text" 2>&1); then
        echo "$from -> $to: \`merpati send --wait delivered\` failed: $out" >&2
        return 1
    fi
    since "$started"
}

# Whether $1 holds an incoming message with text $3 from contact $2. Uses `messages` without a
# name, which does not mark anything read.
has_incoming() {
    cli "$1" --json messages --limit 1000 |
        grep -F "\"contact\":\"$2\"" | grep -F '"direction":"in"' | grep -qF "\"text\":\"$3\""
}

# Whether $1's message to $2 with text $3 is delivered or read.
is_delivered() {
    cli "$1" --json messages --limit 1000 |
        grep -F "\"contact\":\"$2\"" | grep -F '"direction":"out"' | grep -F "\"text\":\"$3\"" |
        grep -qE '"status":"(delivered|read)"'
}

# Both sides' view of one message: Bob has it, Alice sees it delivered.
check_message() {
    local from="$1" to_name="$2" from_as="$3" to_as="$4" text="$5"
    if has_incoming "$to_name" "$from_as" "$text"; then
        pass "$to_name received \"$text\" from $from_as"
    else
        fail_check "$to_name did not receive \"$text\" from $from_as"
    fi
    if is_delivered "$from" "$to_as" "$text"; then
        pass "$from sees \"$text\" delivered"
    else
        fail_check "$from does not see \"$text\" delivered"
    fi
}

echo "== NAT scenario: $mode NAT (namespaces $MP_PREFIX-*)"
up_options=(--delay "$MP_DELAY_MS")
[[ "$mode" == symmetric ]] && up_options+=(--symmetric)
up_out=$(mp_topology_up "${up_options[@]}" 2>&1) || {
    status=$?
    echo "$up_out"
    if ((status == MP_SKIP_STATUS)); then exit "$MP_SKIP_STATUS"; fi
    die "topology.sh up failed"
}
echo "$up_out"
if grep -q 'no added delay' <<<"$up_out"; then
    echo "figure: added delay on the NAT links: none (netem unavailable)"
else
    echo "figure: added delay on the NAT links: ${MP_DELAY_MS} ms each way per link"
fi

# The relay. Without public_addresses in a config, its listen addresses count as public, which is
# right here: 198.51.100.10 is the "internet" address.
start_daemon relay "$MP_NS_PUB" --relay --listen "$RELAY_TCP" --listen "$RELAY_QUIC"
relay_id=$(peer_id_of relay)
[[ -n "$relay_id" ]] || die "no peer id in the relay's startup line: $(cat "$work/relay.out")"
relay_addr="$RELAY_TCP/p2p/$relay_id"
echo "relay: $relay_addr"

# Alice and Bob: TCP and QUIC on the same fixed port, so that dials reuse it (port reuse is what
# lets the NAT keep one mapping, and what hole punching needs).
for who in alice:Alice:"$MP_NS_A" bob:Bob:"$MP_NS_B"; do
    IFS=: read -r name display ns <<<"$who"
    cli "$name" init --name "$display" >/dev/null
    start_daemon "$name" "$ns" --listen "/ip4/0.0.0.0/tcp/$PORT" --listen "/ip4/0.0.0.0/udp/$PORT/quic-v1" --no-mdns
    cli "$name" relay add "$relay_addr" >/dev/null
done
echo "alice: $(peer_id_of alice) in $MP_NS_A ($MP_A_IP behind $MP_NAT_A_PUBLIC_IP)"
echo "bob:   $(peer_id_of bob) in $MP_NS_B ($MP_B_IP behind $MP_NAT_B_PUBLIC_IP)"

for name in alice bob; do
    if took=$(wait_reserved "$name"); then
        pass "$name holds a reservation at the relay"
        echo "figure: $name's reservation after ${took}s"
    else
        die "$name got no reservation at the relay within ${RESERVE_DEADLINE}s"
    fi
done

# Invites taken now name the relay (a circuit address through it) besides the private addresses.
alice_invite=$(cli alice invite | tail -n 1)
bob_invite=$(cli bob invite | tail -n 1)
cli alice contact add --name bob "$bob_invite" >/dev/null
cli bob contact add --name alice "$alice_invite" >/dev/null
echo "invites exchanged; bob's addresses as alice knows them:"
cli alice contact show bob | sed 's/^/    /'

# Both ways. The first delivery includes finding a route (the private addresses fail) and setting
# up the relayed connection.
text_ab="hello bob, from behind alice's NAT"
text_ba="hello alice, bob here behind mine"
if took=$(send_delivered alice bob "$text_ab"); then
    echo "figure: time to first delivery alice -> bob: ${took}s"
else
    die "alice's first message to bob was not delivered within ${DELIVERY_DEADLINE}s"
fi
if took=$(send_delivered bob alice "$text_ba"); then
    echo "figure: time to first delivery bob -> alice: ${took}s"
else
    die "bob's first message to alice was not delivered within ${DELIVERY_DEADLINE}s"
fi
check_message alice bob alice bob "$text_ab"
check_message bob alice bob alice "$text_ba"

# The route: a relayed connection (a circuit through the relay) between the two, or, failing
# that, the mailbox at the relay.
if cat "$work/alice.log" "$work/bob.log" | grep -F "connection established" | grep -qF "/p2p-circuit/"; then
    pass "alice and bob connected to each other through the relay (a relayed connection)"
else
    echo "note: no relayed connection between alice and bob was logged; the messages went by the relay's mailbox"
fi

# Hole punching: DCUtR starts as soon as a relayed connection is up, and its outcome is in the
# logs: a success on either side, or the side that started it giving up (after 3 attempts).
punched_by=""
gave_up_at=""
for ((i = 0; i < HOLE_PUNCH_DEADLINE * 5; i++)); do
    for name in alice bob; do
        if grep -qF "$HOLE_PUNCHED" "$work/$name.log"; then punched_by+="$name "; fi
    done
    [[ -n "$punched_by" ]] && break
    if [[ -z "$gave_up_at" ]] && cat "$work/alice.log" "$work/bob.log" | grep -qF "$HOLE_PUNCH_FAILED"; then
        gave_up_at=$i
    fi
    # A success on the other side would be logged at about the same time: wait 2 s more.
    if [[ -n "$gave_up_at" ]] && ((i - gave_up_at >= 10)); then break; fi
    sleep 0.2
done
punch_failures=$(cat "$work/alice.log" "$work/bob.log" | grep -cF "$HOLE_PUNCH_FAILED" || true)
if [[ -n "$punched_by" ]]; then
    echo "figure: hole punched (logged by: ${punched_by% }); logged hole punching failures: $punch_failures"
    for name in alice bob; do
        # From the relayed connection to the direct one, by the daemon's own clock.
        relayed=$(log_time "$name" "through a relay")
        punched=$(log_time "$name" "$HOLE_PUNCHED")
        if [[ -n "$relayed" && -n "$punched" ]]; then
            echo "figure: $name: direct connection $(awk -v a="$relayed" -v b="$punched" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms after the relayed one"
        fi
        grep -F "$HOLE_PUNCHED" "$work/$name.log" | head -n 2 | sed "s/^/    $name: /" || true
    done
elif [[ -n "$gave_up_at" ]]; then
    echo "figure: hole punching gave up; logged hole punching failures: $punch_failures"
    for name in alice bob; do
        grep -F "$HOLE_PUNCH_FAILED" "$work/$name.log" | head -n 3 | sed "s/^/    $name: /" || true
    done
else
    echo "figure: no hole punching outcome logged within ${HOLE_PUNCH_DEADLINE}s of the first delivery"
fi
if [[ "$mode" == normal ]]; then
    if [[ -n "$punched_by" ]]; then
        pass "DCUtR upgraded the relayed connection to a direct one (logged by: ${punched_by% })"
    else
        fail_check "no hole punch within ${HOLE_PUNCH_DEADLINE}s of the first delivery (normal NAT, where it should work)"
    fi
else
    if [[ -n "$punched_by" ]]; then
        echo "note: hole punching succeeded through the symmetric NAT (not expected, not required)"
    else
        pass "no direct connection through the symmetric NAT, as expected; the relay carried the messages"
    fi
fi

# After the punch (or its failure), the conversation goes on both ways.
text_ab2="still there? (written after the hole punch attempt)"
text_ba2="yes, still here"
if took=$(send_delivered alice bob "$text_ab2"); then
    echo "figure: later delivery alice -> bob: ${took}s"
else
    fail_check "alice's later message to bob was not delivered within ${DELIVERY_DEADLINE}s"
fi
if took=$(send_delivered bob alice "$text_ba2"); then
    echo "figure: later delivery bob -> alice: ${took}s"
else
    fail_check "bob's later message to alice was not delivered within ${DELIVERY_DEADLINE}s"
fi
check_message alice bob alice bob "$text_ab2"
check_message bob alice bob alice "$text_ba2"

if ((failures > 0)); then
    show_logs
    echo "NAT-SCENARIO ($mode): FAILED ($failures checks)"
    exit 1
fi
echo "NAT-SCENARIO ($mode): PASSED"
