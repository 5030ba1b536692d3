#!/usr/bin/env bash
# Checks the NAT test topology (tests/nat/topology.sh) in its normal and symmetric modes:
#   1. mp-a and mp-b reach the relay address (a TCP connection to 198.51.100.10 is answered, so
#      packets go out through the NAT and the answer comes back in);
#   2. the relay sees the NAT router's public address as the source, never a private one;
#   3. UDP keeps its inside source port through the normal NAT and gets random ports through the
#      symmetric one;
#   4. mp-a cannot reach mp-b's private address (nor mp-b mp-a's, nor the relay either of them),
#      and nothing arrives at the other side.
# Only bash, iproute2 and nftables are used: connections are bash's /dev/tcp and /dev/udp, and
# what arrives is recorded by nftables sets in the receiving namespace.
#
# The last line is a marker a caller can test:
#   NAT-TOPOLOGY-CHECK: PASSED    every check held (exit 0)
#   NAT-TOPOLOGY-CHECK: SKIPPED   this machine cannot build the topology; the line before says
#                                 "skipping: <reason>" (exit 0; exit 1 instead when
#                                 MERPATI_REQUIRE_NETNS is set, as .ci/run does as root)
#   NAT-TOPOLOGY-CHECK: FAILED    a check failed; "FAIL: ..." says which (exit 1)
# The topology is torn down on every exit.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=topology.sh
source "$here/topology.sh"

MARKER="NAT-TOPOLOGY-CHECK:"
# Seconds a connection attempt may take; the links add a few ms at most.
CONNECT_TIMEOUT=5

fail() {
    echo "FAIL: $*" >&2
    echo "$MARKER FAILED"
    exit 1
}

if ! why=$(mp_probe); then
    echo "skipping: $why"
    if [[ -n "${MERPATI_REQUIRE_NETNS:-}" ]]; then
        echo "MERPATI_REQUIRE_NETNS is set, so a machine that cannot build the topology is a failure" >&2
        echo "$MARKER FAILED"
        exit 1
    fi
    echo "$MARKER SKIPPED"
    exit 0
fi

trap 'mp_topology_down >/dev/null 2>&1 || true' EXIT
# Interrupted or killed: still run the EXIT trap.
trap 'exit 130' INT TERM

# Tries a TCP connection from namespace $1 to $2:$3 and prints what happened: "answered" (the
# host answered: connected, or refused because nothing listens there), or "no answer: <error>".
tcp_try() {
    local out
    # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
    if out=$(ip netns exec "$1" timeout "$CONNECT_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>&1); then
        echo "answered"
    elif [[ "$out" == *"Connection refused"* ]]; then
        echo "answered"
    elif [[ -z "$out" ]]; then
        echo "no answer: timed out after ${CONNECT_TIMEOUT}s"
    else
        echo "no answer: ${out##*: }"
    fi
}

# Sends one UDP datagram from namespace $1 to $2:$3 (from a fresh socket, so a fresh port).
udp_send() {
    # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
    ip netns exec "$1" timeout "$CONNECT_TIMEOUT" bash -c 'echo probe >"/dev/udp/$0/$1"' "$2" "$3"
}

# The elements of nftables set $2 in namespace $1, one per line, fields separated by spaces.
set_elements() {
    ip netns exec "$1" nft list set inet probe "$2" |
        tr -d '\n\t' |
        { grep -oE '[0-9][0-9.]*( \. [0-9][0-9.]*)+' || true; } |
        sed 's/ \. / /g'
}

# Records what reaches each namespace from outside: the relay's view (source address and ports),
# the ports each client sends from, and anything at all arriving at a client.
install_probes() {
    ip netns exec "$MP_NS_PUB" nft -f - <<EOF
table inet probe {
    set tcp_seen { type ipv4_addr . inet_service; size 4096; flags dynamic; }
    set udp_seen { type ipv4_addr . inet_service . inet_service; size 4096; flags dynamic; }
    chain input {
        type filter hook input priority filter; policy accept;
        ip daddr $MP_RELAY_IP tcp flags syn add @tcp_seen { ip saddr . tcp dport }
        ip daddr $MP_RELAY_IP udp dport 4100-4199 add @udp_seen { ip saddr . udp sport . udp dport }
    }
}
EOF
    local ns
    for ns in "$MP_NS_A" "$MP_NS_B"; do
        ip netns exec "$ns" nft -f - <<EOF
table inet probe {
    set udp_sent { type inet_service . inet_service; size 4096; flags dynamic; }
    set arrived { type ipv4_addr . inet_service; size 4096; flags dynamic; }
    chain output {
        type filter hook output priority filter; policy accept;
        ip daddr $MP_RELAY_IP udp dport 4100-4199 add @udp_sent { udp sport . udp dport }
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "eth0" tcp flags syn add @arrived { ip saddr . tcp dport }
        iifname "eth0" udp dport != 4100-4199 add @arrived { ip saddr . udp dport }
    }
}
EOF
    done
}

check_mode() {
    local mode="$1" up_options=()
    [[ "$mode" == symmetric ]] && up_options=(--symmetric)
    echo "== $mode NAT"
    mp_topology_up "${up_options[@]}" || fail "$mode: topology.sh up failed"
    install_probes

    # 1. Both clients reach the relay, and the answer comes back through their NAT.
    local result
    result=$(tcp_try "$MP_NS_A" "$MP_RELAY_IP" 4001)
    [[ "$result" == answered ]] || fail "$mode: $MP_NS_A cannot reach the relay at $MP_RELAY_IP:4001 ($result)"
    echo "ok: $MP_NS_A reaches the relay at $MP_RELAY_IP:4001 over TCP"
    result=$(tcp_try "$MP_NS_B" "$MP_RELAY_IP" 4001)
    [[ "$result" == answered ]] || fail "$mode: $MP_NS_B cannot reach the relay at $MP_RELAY_IP:4001 ($result)"
    echo "ok: $MP_NS_B reaches the relay at $MP_RELAY_IP:4001 over TCP"

    # 2. The relay sees the NAT routers' public addresses, never a private one.
    local tcp_seen
    tcp_seen=$(set_elements "$MP_NS_PUB" tcp_seen)
    grep -qx "$MP_NAT_A_PUBLIC_IP 4001" <<<"$tcp_seen" ||
        fail "$mode: the relay did not see $MP_NAT_A_PUBLIC_IP as the source of $MP_NS_A's connection (saw: ${tcp_seen:-nothing})"
    grep -qx "$MP_NAT_B_PUBLIC_IP 4001" <<<"$tcp_seen" ||
        fail "$mode: the relay did not see $MP_NAT_B_PUBLIC_IP as the source of $MP_NS_B's connection (saw: ${tcp_seen:-nothing})"
    if grep -q '^10\.' <<<"$tcp_seen"; then
        fail "$mode: the relay saw a private source address: $tcp_seen"
    fi
    echo "ok: the relay sees $MP_NAT_A_PUBLIC_IP and $MP_NAT_B_PUBLIC_IP as the sources, no private address"

    # 3. UDP source ports: kept by the normal NAT, random with fully-random.
    local port
    for port in 4101 4102 4103; do
        udp_send "$MP_NS_A" "$MP_RELAY_IP" "$port" || fail "$mode: $MP_NS_A cannot send UDP to $MP_RELAY_IP:$port"
    done
    local udp_sent udp_seen kept=0 changed=0 inside public
    udp_sent=$(set_elements "$MP_NS_A" udp_sent)
    udp_seen=$(set_elements "$MP_NS_PUB" udp_seen)
    for port in 4101 4102 4103; do
        inside=$(awk -v p="$port" '$2 == p { print $1 }' <<<"$udp_sent")
        public=$(awk -v a="$MP_NAT_A_PUBLIC_IP" -v p="$port" '$1 == a && $3 == p { print $2 }' <<<"$udp_seen")
        [[ -n "$inside" ]] || fail "$mode: no record of $MP_NS_A sending UDP to port $port"
        [[ -n "$public" ]] ||
            fail "$mode: the relay got no UDP from $MP_NAT_A_PUBLIC_IP on port $port (saw: ${udp_seen:-nothing})"
        if [[ "$inside" == "$public" ]]; then kept=$((kept + 1)); else changed=$((changed + 1)); fi
        echo "   UDP to port $port: inside source port $inside, the relay sees $MP_NAT_A_PUBLIC_IP:$public"
    done
    if [[ "$mode" == normal ]]; then
        ((changed == 0)) || fail "$mode: the NAT changed $changed of 3 UDP source ports; it should keep them"
        echo "ok: the normal NAT keeps UDP source ports (hole punching can work)"
    else
        # A random port equals the inside one by chance about once in 64 000 times; all three
        # doing so means fully-random is not in effect.
        ((changed > 0)) || fail "$mode: the NAT kept all 3 UDP source ports; fully-random should change them"
        echo "ok: the symmetric NAT gives random public ports ($changed of 3 changed)"
    fi

    # 4. No way into a private network from outside it.
    local from to target
    for from in "$MP_NS_A:$MP_B_IP" "$MP_NS_B:$MP_A_IP" "$MP_NS_PUB:$MP_A_IP" "$MP_NS_PUB:$MP_B_IP"; do
        to="${from#*:}"
        from="${from%%:*}"
        result=$(tcp_try "$from" "$to" 4001)
        [[ "$result" == "no answer"* ]] || fail "$mode: $from reached the private address $to:4001"
        echo "ok: $from cannot reach the private address $to ($result)"
    done
    # Unsolicited datagrams at the NAT routers' public addresses must not get through.
    udp_send "$MP_NS_PUB" "$MP_NAT_A_PUBLIC_IP" 5000 || true
    udp_send "$MP_NS_PUB" "$MP_NAT_B_PUBLIC_IP" 5000 || true
    local arrived
    for target in "$MP_NS_A" "$MP_NS_B"; do
        arrived=$(set_elements "$target" arrived)
        [[ -z "$arrived" ]] || fail "$mode: unsolicited traffic arrived in $target: $arrived"
    done
    # The control: a connection from inside mp-a's LAN is recorded, so the record works.
    result=$(tcp_try "$MP_NS_NAT_A" "$MP_A_IP" 4001)
    [[ "$result" == answered ]] || fail "$mode: $MP_NS_NAT_A cannot reach $MP_A_IP on its own LAN ($result)"
    arrived=$(set_elements "$MP_NS_A" arrived)
    grep -qx "$MP_NAT_A_LAN_IP 4001" <<<"$arrived" ||
        fail "$mode: $MP_NS_A did not record a connection from its router (saw: ${arrived:-nothing})"
    echo "ok: nothing unsolicited arrives in $MP_NS_A or $MP_NS_B (while a connection from inside the LAN is seen)"

    mp_topology_down || fail "$mode: topology.sh down left namespaces behind"
    local ns
    for ns in $(mp_namespaces); do
        if mp_ns_exists "$ns"; then fail "$mode: $ns survived down"; fi
    done
    mp_topology_down || fail "$mode: a second down failed"
    echo "ok: down removed every namespace, and a second down is harmless"
}

check_mode normal
check_mode symmetric
echo "$MARKER PASSED"
