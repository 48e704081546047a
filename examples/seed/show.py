#!/usr/bin/env python3
"""Print what the seed demo runs where, and commands to try (the end of `make demo`).

Ports come from the mesh config itself (meshwright renders it), so this table cannot drift
from what was deployed.
"""

from __future__ import annotations

import argparse
import os

from meshwright.compile.proxy import OUTBOUND_PORT, list_proxies
from meshwright.deliver.bundle import load_mesh

HERE = os.path.dirname(os.path.abspath(__file__))
GATEWAY = "http://127.0.0.1:8080"


ROTATE = "  .venv/bin/ansible-playbook meshwright.mesh.rotate_certs -e force=true # new keys and certificates, in batches, no restart\n"
XDS_TRY = """

The proxies take their config from the control plane (meshwright serve on 127.0.0.1:15012, its log in
state/local/control-plane/var/log/meshwright/control-plane.log) and their certificates from its CSR
service through `meshwright agent`. An edit saved in its watched folder (state/local/control-plane/etc/meshwright/mesh)
applies within a second, with no playbook run:

  .venv/bin/python examples/seed/split.py 80   # order-service -> payment-service: 80% payment-1, 20% payment-2
  .venv/bin/meshwright status                  # every proxy: SYNCED / STALE / NACK per type

The next deploy puts that folder back as examples/seed/mesh says."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delivery", choices=("files", "xds"), default="files", help="how the demo's proxies take their config")
    delivery = parser.parse_args(argv).delivery
    deploy = ".venv/bin/ansible-playbook meshwright.mesh.deploy" + (" -e mesh_delivery=xds" if delivery == "xds" else "")
    mesh = load_mesh([os.path.join(HERE, "mesh")])
    print("\nmeshwright seed demo is up (state in state/local/<host>/, the mesh CA in state/local/ca/):\n")
    print(f"  {'proxy':<20} {'kind':<8} {'admin':>6} {'outbound':>9} {'health':>7} {'stats':>6}")
    for proxy in list_proxies(mesh):
        outbound = "-" if proxy.kind == "gateway" else str(proxy.port(OUTBOUND_PORT))
        print(f"  {proxy.id:<20} {proxy.kind:<8} {proxy.port(15000):>6} {outbound:>9} {proxy.port(15021):>7} {proxy.port(15090):>6}")
    print(f"""
  gateway: {GATEWAY}   logs: state/local/<host>/var/log/meshwright/proxy.log (JSON access log lines)

Try:
  curl -s {GATEWAY}/order        # gateway -> order-service -> payment-service, through every sidecar
  curl -s {GATEWAY}/payment      # gateway -> payment-service
  seq 15 | xargs -P 15 -I{{}} curl -s -o /dev/null -w '%{{http_code}} ' {GATEWAY}/order; echo   # a burst of 15: 10 pass, then 429
  curl -s 127.0.0.1:15406/       # plaintext at payment-1's sidecar: refused (STRICT mutual TLS)
  curl -s -H 'Host: payment-service.default.svc.cluster.local' 127.0.0.1:15401/payment   # from payment's own sidecar: 403 (AuthorizationPolicy)
  .venv/bin/ansible-playbook meshwright.mesh.cert_report                # every proxy's certificate, and whether Envoy uses it
{ROTATE if delivery == "files" else ""}  curl -s 127.0.0.1:15290/stats/prometheus | grep 'destination_service="payment-service' | head -3
  tail -n 2 state/local/order-1/var/log/meshwright/proxy.log
  {deploy} --check --diff      # nothing to change
Traces of order-service go to a Zipkin collector on 127.0.0.1:9411 when one runs there.{XDS_TRY if delivery == "xds" else ""}
Stop it with: make demo-down""")


if __name__ == "__main__":
    main()
