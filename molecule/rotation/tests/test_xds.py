"""Proxies delivered by xds on systemd hosts (issue #14): order-1 and payment-2 take their config
from `meshwright serve` on the gateway's host and their certificates from `meshwright agent`;
gateway and payment-1 keep file delivery. Run after test_rotation.py (pytest's file order): what
is checked here holds after a root rotation too.
"""

from __future__ import annotations

import json
import time

from cryptography import x509

XDS_HOSTS = ("order-1", "payment-2")
WATCHED = "/etc/meshwright/mesh"
SPLIT = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment-service, namespace: default}
spec:
  host: payment-service.default.svc.cluster.local
  subsets:
  - {name: payment-1, labels: {instance: payment-1}}
  - {name: payment-2, labels: {instance: payment-2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-split, namespace: default}
spec:
  hosts: [payment-service.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: payment-service.default.svc.cluster.local, subset: payment-2}
"""


def control_plane_status(host) -> dict:
    return json.loads(host.check_output("curl -sS --max-time 5 http://127.0.0.1:15014/status"))


def synced(status: dict) -> list[str]:
    """Proxies with a stream on which every type the proxy asked for is SYNCED."""
    return sorted(proxy["proxy"] for proxy in status["proxies"]
                  if proxy["streams"] and all(t["state"] == "SYNCED" for s in proxy["streams"] for t in s["types"].values()))


def order_upstreams(host, count: int = 12) -> list[str]:
    """Which payment instance answered order-service's call, for count requests through the gateway."""
    command = f"for i in $(seq {count}); do curl -sS --max-time 5 http://gateway/order; echo; done"
    lines = [line for line in host.check_output(command).splitlines() if line.strip()]
    return [json.loads(line)["upstream"]["instance"] for line in lines]


def test_xds_proxies_are_synced_with_the_control_plane_and_hold_the_agents_certificates(mesh_hosts):
    """Both xds proxies are connected and SYNCED on every type; their hosts hold only the bootstrap
    (no config files), their agent runs as the proxy's user, and the certificate Envoy presents is
    the agent's, signed by the control plane's intermediate."""
    status = control_plane_status(mesh_hosts["gateway"])
    assert synced(status) == ["order-1.default", "payment-2.default"], json.dumps(status["proxies"], indent=1)[:3000]
    for name in XDS_HOSTS:
        host = mesh_hosts[name]
        assert sorted(n for n in host.file("/etc/meshwright/proxy").listdir() if not n.startswith(".")) == ["bootstrap.yaml"]
        agent = host.service("meshwright-agent")
        assert agent.is_running and agent.is_enabled
        assert host.check_output("systemctl show --property User --value meshwright-agent") == "meshwright-proxy"
        leaf, intermediate = x509.load_pem_x509_certificates(host.file("/etc/meshwright/certs/cert-chain.pem").content)
        assert intermediate.subject.rfc4514_string() == "CN=control-plane,O=cluster.local" and leaf.issuer == intermediate.subject
        presented = json.loads(host.check_output("curl -sS --max-time 5 http://127.0.0.1:15000/certs"))["certificates"]
        assert leaf.serial_number in {int(c["serial_number"], 16) for ctx in presented for c in ctx["cert_chain"] or []}


def test_a_virtualservice_edit_in_the_watched_folder_applies_without_a_playbook_run(mesh_hosts):
    """A VirtualService sending order-service's calls to payment-2 only, saved in the control plane's
    watched folder, reaches order-1's proxy over xDS within seconds; removed, both instances answer
    again. (The next deploy would remove it anyway: the controller's folder is the source of truth.)"""
    control_plane, client = mesh_hosts["gateway"], mesh_hosts["payment-1"]
    assert set(order_upstreams(client)) == {"payment-1", "payment-2"}
    control_plane.check_output(f"printf '%s' '{SPLIT}' > {WATCHED}/.split.tmp && mv {WATCHED}/.split.tmp {WATCHED}/split.yaml")
    try:
        saved = time.monotonic()
        while set(order_upstreams(client, 4)) != {"payment-2"}:
            assert time.monotonic() - saved < 20, control_plane.check_output("tail -n 20 /var/log/meshwright/control-plane.log")
            time.sleep(0.2)
        print(f"VirtualService edit: order-1 routes by it {time.monotonic() - saved:.2f} s after the save (no playbook run)")
        assert set(order_upstreams(client, 20)) == {"payment-2"}
    finally:
        # The VirtualService first, then the DestinationRule it uses (each step a valid mesh).
        destination_rule = SPLIT.split("---")[0]
        control_plane.check_output(f"printf '%s' '{destination_rule}' > {WATCHED}/.split.tmp && mv {WATCHED}/.split.tmp {WATCHED}/split.yaml")
        time.sleep(2)
        control_plane.check_output(f"rm -f {WATCHED}/split.yaml")
    deadline = time.monotonic() + 20
    while set(order_upstreams(client)) != {"payment-1", "payment-2"}:
        assert time.monotonic() < deadline, "payment-1 did not come back after the VirtualService was removed"
        time.sleep(0.2)
