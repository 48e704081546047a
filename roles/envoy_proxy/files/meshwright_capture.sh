#!/bin/sh
# meshwright-capture start|stop: iptables capture for the mesh's sidecar on this host.
#   start: the nat rules of /etc/meshwright/capture/iptables.rules (Istio's REDIRECT model:
#          apps' outbound TCP to the proxy's 15001, inbound TCP to its 15006), where the host
#          has IPv6 the filter rules of ip6tables.rules (TCP over IPv6 refused: the proxy
#          captures IPv4 only), and the service names of /etc/meshwright/capture/hosts in a
#          marked block of /etc/hosts.
#   stop:  removes all of it, leaving every other rule and line as it was.
# Run by meshwright-capture.service at boot (before the network) and by the envoy_proxy role.
set -eu
# MESHWRIGHT_CAPTURE_DIR: another folder (tests/integration/test_capture_netns.py), never set by the role.
dir="${MESHWRIGHT_CAPTURE_DIR:-/etc/meshwright/capture}"
begin="# BEGIN meshwright capture"
end="# END meshwright capture"
chains="MESHWRIGHT_INBOUND MESHWRIGHT_IN_REDIRECT MESHWRIGHT_OUTPUT MESHWRIGHT_REDIRECT"
chains6="MESHWRIGHT_IPV6_INPUT MESHWRIGHT_IPV6_OUTPUT"

# A host without IPv6 (disabled in the kernel) has no IPv6 to refuse, and no ip6tables tables.
has_ipv6() {
    [ -e /proc/net/if_inet6 ]
}

remove_rules() {
    while iptables -t nat -D PREROUTING -p tcp -j MESHWRIGHT_INBOUND 2>/dev/null; do :; done
    while iptables -t nat -D OUTPUT -p tcp -j MESHWRIGHT_OUTPUT 2>/dev/null; do :; done
    for chain in $chains; do
        if iptables -t nat -n -L "$chain" >/dev/null 2>&1; then iptables -t nat -F "$chain"; fi
    done
    for chain in $chains; do
        if iptables -t nat -n -L "$chain" >/dev/null 2>&1; then iptables -t nat -X "$chain"; fi
    done
    if has_ipv6; then
        while ip6tables -D INPUT -p tcp -j MESHWRIGHT_IPV6_INPUT 2>/dev/null; do :; done
        while ip6tables -D OUTPUT -p tcp -j MESHWRIGHT_IPV6_OUTPUT 2>/dev/null; do :; done
        for chain in $chains6; do
            if ip6tables -n -L "$chain" >/dev/null 2>&1; then ip6tables -F "$chain" && ip6tables -X "$chain"; fi
        done
    fi
}

# /etc/hosts is rewritten in place (not replaced): in containers it is a mounted file.
remove_hosts() {
    if grep -qxF "$begin" /etc/hosts; then
        sed "/^$begin\$/,/^$end\$/d" /etc/hosts >"$dir/hosts.tmp"
        cat "$dir/hosts.tmp" >/etc/hosts
        rm -f "$dir/hosts.tmp"
    fi
}

case "${1:-}" in
start)
    remove_rules
    iptables-restore --noflush <"$dir/iptables.rules"
    if has_ipv6; then ip6tables-restore --noflush <"$dir/ip6tables.rules"; fi
    remove_hosts
    { echo "$begin"; cat "$dir/hosts"; echo "$end"; } >>/etc/hosts
    ;;
stop)
    remove_rules
    remove_hosts
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
