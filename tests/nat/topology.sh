#!/usr/bin/env bash
# A small internet with two NATed homes, built from Linux network namespaces, for NAT tests.
#
#   tests/nat/topology.sh up [--symmetric] [--delay MS]   build it (tears down any old one first)
#   tests/nat/topology.sh down                            remove it (safe to run at any time)
#   tests/nat/topology.sh probe                           can this machine build it? (exit 0 or 77)
#
# Needs root, iproute2 (`ip`, and `tc` for the delay) and nftables (`nft`); nothing else.
#
#                       mp-pub: the "internet", 198.51.100.0/24 on bridge br0
#                       relay address 198.51.100.10 (on br0)
#                  ┌──────────────────┴──────────────────┐
#        pub0 198.51.100.101                    pub0 198.51.100.102
#        mp-nat-a  (masquerade on pub0)         mp-nat-b  (masquerade on pub0)
#        lan0 10.0.1.1                          lan0 10.0.2.1
#                  │                                      │
#        eth0 10.0.1.2  mp-a (Alice)            eth0 10.0.2.2  mp-b (Bob)
#        default route via 10.0.1.1             default route via 10.0.2.1
#
# Namespaces (the prefix `mp` can be changed with MP_NETNS_PREFIX, e.g. for parallel runs):
#   mp-pub    the public segment; run the relay here, listening on 198.51.100.10 (or 0.0.0.0)
#             and announcing /ip4/198.51.100.10/tcp/4001 and /ip4/198.51.100.10/udp/4001/quic-v1.
#   mp-nat-a  Alice's home router: forwards 10.0.1.0/24 <-> the public segment, source NAT to
#             198.51.100.101; drops unsolicited inbound traffic without an answer (only replies
#             to connections opened from inside get in, as on a real home router).
#   mp-nat-b  Bob's home router: the same for 10.0.2.0/24, public address 198.51.100.102.
#   mp-a      Alice's machine, 10.0.1.2.
#   mp-b      Bob's machine, 10.0.2.2.
# Every namespace has loopback up. The NAT routers have no default route: the "internet" is the
# public segment only, so mp-a cannot reach 10.0.2.0/24 and mp-b cannot reach 10.0.1.0/24.
#
# NAT behaviour:
#   default      `masquerade`: Linux keeps the inside source port when it is free, so a socket's
#                mapping is the same towards every destination (endpoint-independent mapping,
#                address-and-port-dependent filtering): hole punching can work.
#   --symmetric  `masquerade fully-random`: a random public port per connection (a symmetric NAT):
#                hole punching must fail and traffic must go through the relay.
#   --delay MS   netem delay on each NAT router's public link, both directions (default 5 ms;
#                0 for none). Kernels without sch_netem get no delay and a note on stderr.
#
# Running commands inside (as root):
#   ip netns exec mp-pub merpatid --relay --home /tmp/relay --config relay.toml
#   ip netns exec mp-a   merpatid --home /tmp/alice
#   ip netns exec mp-a   merpati --home /tmp/alice relay add /ip4/198.51.100.10/tcp/4001/p2p/<peer id>
#   ip netns exec mp-nat-a nft list ruleset            # the NAT rules
# Processes started this way keep the namespace until they exit; stop them before `down`.
#
# Callers: `source` this file to get the names (MP_NS_PUB, MP_NS_NAT_A, MP_NS_NAT_B, MP_NS_A,
# MP_NS_B; MP_RELAY_IP, MP_NAT_A_PUBLIC_IP, MP_NAT_B_PUBLIC_IP, MP_A_IP, MP_B_IP, ...) and the
# mp_topology_up, mp_topology_down and mp_probe functions without running anything (it sets
# `set -euo pipefail` in the caller), or run it. Either way, put `trap 'tests/nat/topology.sh down' EXIT` (or mp_topology_down) in the caller.
# Exit codes: 0 done; 77 this machine cannot build the topology (the reason follows
# "skipping: " on stderr); anything else is a failure.

set -euo pipefail

MP_PREFIX="${MP_NETNS_PREFIX:-mp}"
MP_NS_PUB="$MP_PREFIX-pub"
MP_NS_NAT_A="$MP_PREFIX-nat-a"
MP_NS_NAT_B="$MP_PREFIX-nat-b"
MP_NS_A="$MP_PREFIX-a"
MP_NS_B="$MP_PREFIX-b"
# shellcheck disable=SC2034 # for callers that source this file
MP_PUBLIC_NET="198.51.100.0/24"
MP_RELAY_IP="198.51.100.10"
MP_NAT_A_PUBLIC_IP="198.51.100.101"
MP_NAT_B_PUBLIC_IP="198.51.100.102"
MP_NAT_A_LAN_IP="10.0.1.1"
MP_NAT_B_LAN_IP="10.0.2.1"
MP_A_IP="10.0.1.2"
MP_B_IP="10.0.2.2"
MP_SKIP_STATUS=77

# All namespaces, in the order they are built.
mp_namespaces() {
    printf '%s\n' "$MP_NS_PUB" "$MP_NS_NAT_A" "$MP_NS_NAT_B" "$MP_NS_A" "$MP_NS_B"
}

mp_ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"
}

# Prints why this machine cannot build the topology and fails, or succeeds silently.
mp_probe() {
    if [[ "$(id -u)" != 0 ]]; then
        echo "network namespaces need root (running as uid $(id -u))"
        return 1
    fi
    local tool
    for tool in ip nft; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "\`$tool\` is not installed (Debian package $([[ $tool == ip ]] && echo iproute2 || echo nftables))"
            return 1
        fi
    done
    local probe="$MP_PREFIX-probe-$$" out
    if ! out=$(ip netns add "$probe" 2>&1); then
        echo "cannot create a network namespace: $out"
        return 1
    fi
    # veth, bridge and nftables NAT with fully-random are what `up` needs; try each once.
    if ! out=$( {
        ip -n "$probe" link add p0 type veth peer name p1 &&
            ip -n "$probe" link add pbr type bridge &&
            ip netns exec "$probe" nft -f - <<'EOF'
table ip probe {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "p0" masquerade fully-random
    }
}
EOF
    } 2>&1); then
        ip netns del "$probe" 2>/dev/null || true
        echo "this kernel cannot do what the topology needs (veth, bridge, nftables NAT): $out"
        return 1
    fi
    ip netns del "$probe"
}

# Removes every namespace of the topology that exists (their interfaces go with them).
mp_topology_down() {
    local ns
    for ns in $(mp_namespaces); do
        if mp_ns_exists "$ns"; then
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    for ns in $(mp_namespaces); do
        if mp_ns_exists "$ns"; then
            echo "topology: $ns is still there (a process inside may hold it)" >&2
            return 1
        fi
    done
}

# A veth pair: $1 in namespace $2 with address $3, its peer $4 in namespace $5 (address $6, or
# "-" for none).
mp_veth() {
    ip link add "$1" netns "$2" type veth peer name "$4" netns "$5"
    ip -n "$2" addr add "$3" dev "$1"
    if [[ "$6" != - ]]; then
        ip -n "$5" addr add "$6" dev "$4"
    fi
    ip -n "$2" link set "$1" up
    ip -n "$5" link set "$4" up
}

# Makes namespace $1 a NAT router from lan0 to pub0 (addresses set by mp_veth); $2 is added to
# the masquerade rule ("" or "fully-random").
mp_nat_router() {
    local ns="$1" masquerade="$2"
    ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip netns exec "$ns" nft -f - <<EOF
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "pub0" masquerade $masquerade
    }
}
table ip filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "pub0" accept
    }
    # Unsolicited packets to the router's own public address are dropped, not answered: left to
    # the kernel, a TCP SYN would get a reset (and UDP an ICMP error), which kills a hole punch
    # whose first packet arrives before the other side's has opened the mapping.
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "pub0" ct state != { established, related } drop
    }
}
EOF
}

# Adds $1 ms of netem delay to interface $2 in namespace $3. Where netem is missing, says so once
# (MP_NO_DELAY holds why) and adds none.
MP_NO_DELAY=""
mp_delay() {
    local ms="$1" dev="$2" ns="$3" out
    [[ "$ms" == 0 || -n "$MP_NO_DELAY" ]] && return 0
    if ! command -v tc >/dev/null 2>&1; then
        MP_NO_DELAY="\`tc\` is not installed (Debian package iproute2)"
    elif ! out=$(ip netns exec "$ns" tc qdisc add dev "$dev" root netem delay "${ms}ms" 2>&1); then
        MP_NO_DELAY="netem is not available in this kernel: ${out//$'\n'/ }"
    fi
    if [[ -n "$MP_NO_DELAY" ]]; then
        echo "note: no added delay on the NAT routers' links: $MP_NO_DELAY" >&2
    fi
}

# Builds the topology. Options: --symmetric, --delay MS.
mp_topology_up() {
    local masquerade="" delay=5
    while (($#)); do
        case "$1" in
            --symmetric) masquerade="fully-random" ;;
            --delay)
                [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "topology: --delay needs a whole number of ms" >&2; return 2; }
                delay="$2"
                shift
                ;;
            *) echo "topology: unknown option $1 (use --symmetric, --delay MS)" >&2; return 2 ;;
        esac
        shift
    done
    local why
    if ! why=$(mp_probe); then
        echo "skipping: $why" >&2
        return "$MP_SKIP_STATUS"
    fi
    mp_topology_down
    local ns
    for ns in $(mp_namespaces); do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done

    # The public segment: a bridge holding the relay's address and one port per NAT router.
    ip -n "$MP_NS_PUB" link add br0 type bridge forward_delay 0
    ip -n "$MP_NS_PUB" addr add "$MP_RELAY_IP/24" dev br0
    ip -n "$MP_NS_PUB" link set br0 up
    mp_veth pub0 "$MP_NS_NAT_A" "$MP_NAT_A_PUBLIC_IP/24" port-a "$MP_NS_PUB" -
    mp_veth pub0 "$MP_NS_NAT_B" "$MP_NAT_B_PUBLIC_IP/24" port-b "$MP_NS_PUB" -
    ip -n "$MP_NS_PUB" link set port-a master br0
    ip -n "$MP_NS_PUB" link set port-b master br0

    # The homes.
    mp_veth lan0 "$MP_NS_NAT_A" "$MP_NAT_A_LAN_IP/24" eth0 "$MP_NS_A" "$MP_A_IP/24"
    mp_veth lan0 "$MP_NS_NAT_B" "$MP_NAT_B_LAN_IP/24" eth0 "$MP_NS_B" "$MP_B_IP/24"
    ip -n "$MP_NS_A" route add default via "$MP_NAT_A_LAN_IP"
    ip -n "$MP_NS_B" route add default via "$MP_NAT_B_LAN_IP"

    mp_nat_router "$MP_NS_NAT_A" "$masquerade"
    mp_nat_router "$MP_NS_NAT_B" "$masquerade"

    # Delay on both directions of each NAT router's public link.
    MP_NO_DELAY=""
    mp_delay "$delay" pub0 "$MP_NS_NAT_A"
    mp_delay "$delay" port-a "$MP_NS_PUB"
    mp_delay "$delay" pub0 "$MP_NS_NAT_B"
    mp_delay "$delay" port-b "$MP_NS_PUB"

    echo "topology: up ($([[ -n $masquerade ]] && echo symmetric || echo normal) NAT; relay $MP_RELAY_IP in $MP_NS_PUB; $MP_NS_A $MP_A_IP behind $MP_NAT_A_PUBLIC_IP; $MP_NS_B $MP_B_IP behind $MP_NAT_B_PUBLIC_IP)"
}

mp_main() {
    case "${1:-}" in
        up) shift; mp_topology_up "$@" ;;
        down) mp_topology_down && echo "topology: down" ;;
        probe)
            local why
            if why=$(mp_probe); then
                echo "topology: this machine can build it"
            else
                echo "skipping: $why" >&2
                return "$MP_SKIP_STATUS"
            fi
            ;;
        *)
            echo "usage: $0 up [--symmetric] [--delay MS] | down | probe" >&2
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    mp_main "$@"
fi
