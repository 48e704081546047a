"""What the proxy image (images/proxy) runs in an injected pod, as deliver/kube_inject.py
starts it (the image's entrypoint `meshwright-proxy` is `python3 -m meshwright.pod`):

- `capture ...`, the init container `istio-init` (Istio's istio-iptables): the nat rules that
  send the pod's inbound TCP to Envoy's 15006 and its outbound TCP to 15001, except the
  proxy's own traffic (its uid) and the ports and ranges left out by the capture annotations.
- `proxy sidecar`, the container `istio-proxy` (Istio's pilot-agent): the agent (meshwright.agent,
  in this process) gets the pod's first certificate with its projected service-account token
  and renews it;
  the bootstrap for ADS from the control plane is written; Envoy runs. On SIGTERM (the pod
  is deleted; the control plane has taken it out of every load assignment already, as the
  pod's deletionTimestamp says) the inbound listeners drain for the drain duration while
  Envoy keeps serving, then Envoy and the agent stop: requests already sent to this pod
  are answered (Istio's terminationDrainDuration, 5 s by default). It also answers the app's
  probes that the injector sent through it (deliver/kube_probes.py: `/app-health/...` on 15020,
  Istio's agent's status port), probing the app from inside the pod.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from meshwright.agent import Agent, AgentError
from meshwright.compile.proxy import ADMIN_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_PORT, REDIRECT, Proxy
from meshwright.compile.telemetry import ProxyTelemetry
from meshwright.compile.xds_bootstrap import XdsServer, compile_xds_bootstrap
from meshwright.deliver.kube_probes import PROBERS_VARIABLE, STATUS_PORT, parse_probers, run_probe
from meshwright.mesh import MeshSettings
from meshwright.pki.store import CHAIN_FILE

# Istio's source address for inbound passthrough (compile/capture.py): never redirected.
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"
BOOTSTRAP_FILE = "/etc/istio/proxy/bootstrap.json"
DEFAULT_CA_FILE = "/var/run/secrets/istio/root-cert.pem"
FIRST_CERTIFICATE_TIMEOUT = 120.0


class PodError(ValueError):
    """A setting the pod gave that cannot work, with what to change (printed, exit 2)."""


# ---- capture ----------------------------------------------------------------------------


def _ports(option: str, text: str) -> list[int]:
    ports = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise PodError(f"{option} {text!r}: {part!r} is not a port (1-65535)")
        ports.append(int(part))
    return ports


def _ranges(option: str, text: str) -> list[str]:
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            ranges.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise PodError(f"{option} {text!r}: {part!r} is not an IPv4 address or CIDR range") from None
    return ranges


@dataclass(frozen=True)
class Capture:
    proxy_uid: int
    include_inbound: str = "*"  # "*": every port not excluded; else a list of ports; "": none
    exclude_inbound: str = ""
    exclude_outbound_ports: str = ""
    include_outbound_ranges: str = "*"
    exclude_outbound_ranges: str = ""


def _inbound_rules(capture: Capture) -> list[str]:
    rules = [f"-A MESHWRIGHT_INBOUND -p tcp --dport {port} -j RETURN"
             for port in _ports("--exclude-inbound-ports", capture.exclude_inbound)]
    if capture.include_inbound.strip() == "*":
        rules.append("-A MESHWRIGHT_INBOUND -p tcp -j MESHWRIGHT_IN_REDIRECT")
    else:
        rules += [f"-A MESHWRIGHT_INBOUND -p tcp --dport {port} -j MESHWRIGHT_IN_REDIRECT"
                  for port in _ports("--include-inbound-ports", capture.include_inbound)]
    return rules


def _outbound_rules(capture: Capture) -> list[str]:
    uid = capture.proxy_uid
    rules = [
        f"-A MESHWRIGHT_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE}/32 -o lo -j RETURN",
        # the proxy calling its own pod's address over lo: an inbound request (Istio's rule)
        f"-A MESHWRIGHT_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j MESHWRIGHT_IN_REDIRECT",
        f"-A MESHWRIGHT_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A MESHWRIGHT_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        "-A MESHWRIGHT_OUTPUT -d 127.0.0.1/32 -j RETURN",
    ]
    rules += [f"-A MESHWRIGHT_OUTPUT -p tcp --dport {port} -j RETURN"
              for port in _ports("--exclude-outbound-ports", capture.exclude_outbound_ports)]
    rules += [f"-A MESHWRIGHT_OUTPUT -d {cidr} -j RETURN"
              for cidr in _ranges("--exclude-outbound-ip-ranges", capture.exclude_outbound_ranges)]
    if capture.include_outbound_ranges.strip() == "*":
        rules.append("-A MESHWRIGHT_OUTPUT -j MESHWRIGHT_REDIRECT")
    else:
        rules += [f"-A MESHWRIGHT_OUTPUT -d {cidr} -j MESHWRIGHT_REDIRECT"
                  for cidr in _ranges("--include-outbound-ip-ranges", capture.include_outbound_ranges)]
    return rules


def capture_rules(capture: Capture) -> str:
    """The pod's nat table additions (iptables-restore --noflush input), the same model as a
    VM's capture (roles/envoy_proxy/templates/capture.rules.j2)."""
    lines = [
        "*nat",
        ":MESHWRIGHT_INBOUND - [0:0]",
        ":MESHWRIGHT_IN_REDIRECT - [0:0]",
        ":MESHWRIGHT_OUTPUT - [0:0]",
        ":MESHWRIGHT_REDIRECT - [0:0]",
        "-A PREROUTING -p tcp -j MESHWRIGHT_INBOUND",
        "-A OUTPUT -p tcp -j MESHWRIGHT_OUTPUT",
        *_inbound_rules(capture),
        f"-A MESHWRIGHT_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}",
        f"-A MESHWRIGHT_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        *_outbound_rules(capture),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def cmd_capture(args) -> int:
    rules = capture_rules(Capture(args.proxy_uid, args.include_inbound_ports, args.exclude_inbound_ports, args.exclude_outbound_ports,
                                  args.include_outbound_ip_ranges, args.exclude_outbound_ip_ranges))
    print(rules, end="", flush=True)  # in the init container's log, as istio-init prints its rules
    applied = subprocess.run(["iptables-restore", "--noflush"], input=rules, text=True, capture_output=True, check=False)
    if applied.returncode != 0:
        print(f"capture: iptables-restore refused the rules: {applied.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


# ---- proxy sidecar ----------------------------------------------------------------------


@dataclass(frozen=True)
class PodProxy:
    """What the injector tells the istio-proxy container (deliver/kube_inject.py proxy_container)."""

    name: str
    namespace: str
    address: str
    service_account: str
    xds: tuple[str, int]
    csr: tuple[str, int]
    trust_domain: str
    token_file: str
    certs_dir: str
    ca_file: str
    drain_seconds: float

    @property
    def id(self) -> str:
        return f"{self.name}.{self.namespace}"


def _address(variable: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PodError(f"{variable}={text!r}: expected HOST:PORT")
    return host, int(port)


def pod_proxy_from_environment(environ: dict) -> PodProxy:
    """The settings from the downward API and the injector's variables; PodError names a missing one."""
    required = ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT", "MESHWRIGHT_XDS_ADDRESS", "MESHWRIGHT_CSR_ADDRESS",
                "MESHWRIGHT_TOKEN_FILE", "MESHWRIGHT_CERTS_DIR")
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise PodError(f"the istio-proxy container needs the environment variables {', '.join(missing)} (the injector sets them)")
    drain = environ.get("MESHWRIGHT_DRAIN_DURATION", "5")
    try:
        drain_seconds = float(drain.removesuffix("s"))
    except ValueError:
        raise PodError(f"MESHWRIGHT_DRAIN_DURATION={drain!r}: expected seconds such as 5 or 5s") from None
    return PodProxy(environ["POD_NAME"], environ["POD_NAMESPACE"], environ["INSTANCE_IP"], environ["SERVICE_ACCOUNT"],
                    _address("MESHWRIGHT_XDS_ADDRESS", environ["MESHWRIGHT_XDS_ADDRESS"]),
                    _address("MESHWRIGHT_CSR_ADDRESS", environ["MESHWRIGHT_CSR_ADDRESS"]),
                    environ.get("MESHWRIGHT_TRUST_DOMAIN") or "cluster.local", environ["MESHWRIGHT_TOKEN_FILE"],
                    environ["MESHWRIGHT_CERTS_DIR"], environ.get("MESHWRIGHT_CA_FILE") or DEFAULT_CA_FILE, drain_seconds)


def pod_bootstrap(pod: PodProxy) -> dict:
    """The pod's Envoy bootstrap for ADS with mTLS to the control plane: the bootstrap a VM's
    xDS proxy gets (compile/xds_bootstrap.py), for a capturing sidecar without port offset. The
    pod has no mesh files: what the mesh says about it comes over xDS."""
    proxy = Proxy(pod.name, pod.namespace, "sidecar", pod.address, (), "", pod.service_account, 0, interception=REDIRECT)
    return compile_xds_bootstrap(proxy, MeshSettings(trust_domain=pod.trust_domain), ProxyTelemetry(),
                                 XdsServer((pod.xds,), pod.certs_dir))


def pod_agent(pod: PodProxy) -> Agent:
    """The agent: the first certificate on the projected token, then renewals over mTLS (the CSR
    service's join port is the next one, as `serve` makes it by default)."""
    try:
        with open(pod.ca_file, "rb") as handle:
            roots = handle.read()
    except OSError as error:
        raise PodError(f"MESHWRIGHT_CA_FILE {pod.ca_file}: cannot read the mesh's roots ({error.strerror}): is the ConfigMap "
                       "istio-ca-root-cert in the pod's namespace?") from None
    host, port = pod.csr
    return Agent([(host, port)], [(host, port + 1)], pod.id, pod.certs_dir, roots,
                 service_account_token_file=pod.token_file, trust_domain=pod.trust_domain)


def envoy_command(pod: PodProxy) -> list[str]:
    seconds = str(max(1, round(pod.drain_seconds)))
    return ["envoy", "-c", BOOTSTRAP_FILE, "--disable-hot-restart", "--drain-time-s", seconds, "--drain-strategy", "immediate",
            "--parent-shutdown-time-s", str(int(seconds) + 1), "--log-level", "warning"]


class AgentThread(threading.Thread):
    """The agent beside Envoy for the pod's life; failure holds what stopped it."""

    def __init__(self, agent: Agent):
        super().__init__(daemon=True, name="agent")
        self.agent, self.stop, self.failure = agent, threading.Event(), None

    def run(self) -> None:
        try:
            self.agent.run(self.stop)
        except AgentError as error:
            self.failure = str(error)


def _wait_for_certificate(pod: PodProxy, agent: AgentThread) -> None:
    deadline = time.monotonic() + FIRST_CERTIFICATE_TIMEOUT
    while not os.path.exists(os.path.join(pod.certs_dir, CHAIN_FILE)):
        if not agent.is_alive():
            raise PodError(f"no first certificate: {agent.failure}")
        if time.monotonic() > deadline:
            raise PodError(f"no certificate from {pod.csr[0]}:{pod.csr[1]} after {FIRST_CERTIFICATE_TIMEOUT:g} s")
        time.sleep(0.05)


def _drain_inbound() -> None:
    """Envoy's inbound listeners stop taking new connections gracefully (Istio's drain on SIGTERM)."""
    request = urllib.request.Request(f"http://127.0.0.1:{ADMIN_PORT}/drain_listeners?inboundonly&graceful", method="POST")
    try:
        urllib.request.urlopen(request, timeout=2).close()
    except OSError as error:
        print(f"proxy sidecar: could not start the drain: {error}", file=sys.stderr, flush=True)


def _stop(envoy: subprocess.Popen, agent: AgentThread) -> None:
    agent.stop.set()
    if envoy.poll() is None:
        envoy.terminate()
    try:
        envoy.wait(timeout=5)
    except subprocess.TimeoutExpired:
        envoy.kill()


def app_probers_from_environment(environ: dict) -> dict:
    """The app's probes the injector sent through the sidecar (ISTIO_KUBE_APP_PROBERS), by path."""
    try:
        return parse_probers(environ.get(PROBERS_VARIABLE, ""))
    except ValueError as error:
        raise PodError(f"{PROBERS_VARIABLE}: {error}") from None


def app_probe_server(probers: dict, pod_address: str, listen: tuple[str, int] = ("0.0.0.0", STATUS_PORT)) -> http.server.ThreadingHTTPServer:
    """GET /app-health/<container>/<kind> on the status port (the kubelet's rewritten probes; the
    port is never captured), each answered by the app's own probe made from inside the pod."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            prober = probers.get(self.path.split("?")[0])
            if prober is None:
                self.send_error(404, "no such app probe")
                return
            result = run_probe(prober, pod_address)
            body = f"{result.reason}\n".encode()
            self.send_response(result.status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(listen, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="app-probes", daemon=True).start()
    return server


def cmd_sidecar(args) -> int:
    del args
    pod = pod_proxy_from_environment(dict(os.environ))
    probers = app_probers_from_environment(dict(os.environ))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if probers:
        app_probe_server(probers, pod.address)
    terminating = threading.Event()
    signal.signal(signal.SIGTERM, lambda *dummy: terminating.set())
    signal.signal(signal.SIGINT, lambda *dummy: terminating.set())
    agent = AgentThread(pod_agent(pod))
    agent.start()
    _wait_for_certificate(pod, agent)
    with open(BOOTSTRAP_FILE, "w", encoding="utf-8") as handle:
        json.dump(pod_bootstrap(pod), handle, indent=1, sort_keys=True)
    envoy = subprocess.Popen(envoy_command(pod))  # pylint: disable=consider-using-with  # runs as long as the pod
    print(f"proxy sidecar: {pod.id} runs Envoy (pid {envoy.pid}) and the agent", flush=True)
    while not terminating.wait(0.5):
        if envoy.poll() is not None or not agent.is_alive():
            print(f"proxy sidecar: {'envoy exited' if envoy.poll() is not None else agent.failure}: stopping", file=sys.stderr, flush=True)
            _stop(envoy, agent)
            return 1
    print(f"proxy sidecar: terminating: draining inbound for {pod.drain_seconds:g} s", flush=True)
    _drain_inbound()
    time.sleep(pod.drain_seconds)
    _stop(envoy, agent)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshwright-proxy", description="the proxy image's entrypoint in an injected pod")
    commands = parser.add_subparsers(dest="command", required=True)
    capture = commands.add_parser("capture", help="the init container: iptables capture in the pod's network namespace")
    capture.add_argument("--proxy-uid", type=int, default=1337, help="the proxy's uid, whose traffic is never captured")
    capture.add_argument("--include-inbound-ports", default="*", help="ports whose inbound TCP goes to Envoy (* for all; default *)")
    capture.add_argument("--exclude-inbound-ports", default="", help="ports left out of inbound capture")
    capture.add_argument("--exclude-outbound-ports", default="", help="destination ports left out of outbound capture")
    capture.add_argument("--include-outbound-ip-ranges", default="*", help="destination ranges captured (* for all; default *)")
    capture.add_argument("--exclude-outbound-ip-ranges", default="", help="destination ranges left out of outbound capture")
    capture.set_defaults(func=cmd_capture)
    proxy = commands.add_parser("proxy", help="the istio-proxy container")
    proxy.add_argument("role", choices=("sidecar",))
    proxy.set_defaults(func=cmd_sidecar)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PodError as error:
        print(f"meshwright-proxy: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
