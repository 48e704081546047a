"""`meshwright marathon-sidecar`: what the sidecar container that `meshwright marathon-inject`
adds to a Marathon pod runs (docs/marathon.md): the agent for its certificate, then Envoy
bootstrapped for ADS from the control plane.

1. The first certificate. A task has no join token (its proxy's name exists only once Marathon
   has launched it) and no credential Marathon signs. It sends its task id ($MESOS_TASK_ID)
   with its CSR; the control plane asks Marathon (serve/marathon.py attest_task) whether that
   task runs now, belongs to the app or pod whose task the proxy is, and runs on the host the
   call comes from, and signs once per task, for the identity the mesh gives the proxy (the
   app's labels: the task never chooses it). Renewals go over mTLS with the held certificate.
2. The bootstrap: the task has no mesh files, so the control plane serves it (GetBootstrap, on
   the mTLS port, for the proxy the certificate proves). Its health port must be the one
   Marathon checks (ENDPOINT_MESH_HEALTH): the registry gives a host-networking instance the
   port offset of its allocated health port, and a mismatch is an error, not a sidecar that
   Marathon would kill as unhealthy.
3. Envoy runs as a child; the agent keeps renewing beside it. SIGTERM (Marathon killing the
   task) stops both; Envoy exiting ends the sidecar with its exit code, so Marathon restarts it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import grpc

from meshwright.agent import Agent, AgentError
from meshwright.deliver.file_set import write_atomic
from meshwright.serve.certificates import BOOTSTRAP_PATH, CA_SERVER_NAME

LOG = logging.getLogger("meshwright.agent")
FIRST_CERTIFICATE_SECONDS = 120.0  # a task may start well before the control plane sees it
JOIN_GRACE_SECONDS = 60.0


class SidecarError(Exception):
    """The sidecar cannot start; the message says why."""


@dataclass(frozen=True)
class SidecarOptions:
    proxy: str
    task_id: str
    identity: str
    xds: list[tuple[str, int]]
    csr: list[tuple[str, int]]
    join: list[tuple[str, int]]
    certs_dir: str
    roots: bytes
    health_port: int
    envoy: str
    config_dir: str


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch_bootstrap(options: SidecarOptions, agent: Agent) -> dict:
    """The proxy's bootstrap from the control plane, over mTLS with the agent's certificate."""
    held = agent.current()
    request = json.dumps({"proxy": options.proxy, "xds": [address(*a) for a in options.xds], "certs_dir": options.certs_dir}).encode()
    failures = []
    for host, port in options.csr:
        credentials = grpc.ssl_channel_credentials(options.roots, held.key, held.chain)
        with grpc.secure_channel(address(host, port), credentials, options=(("grpc.ssl_target_name_override", CA_SERVER_NAME),)) as channel:
            try:
                return json.loads(channel.unary_unary(BOOTSTRAP_PATH)(request, timeout=10))
            except grpc.RpcError as error:
                failures.append(f"{address(host, port)}: {error.code().name}: {error.details()}")
    raise SidecarError(f"proxy {options.proxy}: no bootstrap from the control plane ({'; '.join(failures)})")


def health_port_of(bootstrap: dict) -> int | None:
    for listener in bootstrap.get("static_resources", {}).get("listeners", []):
        if listener.get("name", "").startswith("health"):
            return listener["address"]["socket_address"]["port_value"]
    return None


def wait_for_certificate(agent: Agent, failed: list, stop: threading.Event, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while agent.current() is None:
        if failed:
            raise SidecarError(str(failed[0]))
        if stop.is_set():
            raise SidecarError("stopped before the first certificate")
        if time.monotonic() > deadline:
            raise SidecarError(f"proxy {agent.proxy}: no first certificate in {timeout:g} s (is the task in the control plane's Marathon?)")
        stop.wait(0.1)


def run(options: SidecarOptions, stop: threading.Event) -> int:
    """Get the certificate and the bootstrap, run Envoy until stop is set or it exits; its exit code."""
    agent = Agent(options.csr, options.join, options.proxy, options.certs_dir, options.roots,
                  marathon_task_id=options.task_id, identity=options.identity, join_grace=JOIN_GRACE_SECONDS)
    failed: list[AgentError] = []

    def keep_certificates():
        try:
            agent.run(stop)
        except AgentError as error:
            failed.append(error)
            stop.set()

    threading.Thread(target=keep_certificates, name="agent", daemon=True).start()
    wait_for_certificate(agent, failed, stop, FIRST_CERTIFICATE_SECONDS)
    bootstrap = fetch_bootstrap(options, agent)
    health = health_port_of(bootstrap)
    if health != options.health_port:
        raise SidecarError(f"proxy {options.proxy}: the control plane puts its health check on port {health}, "
                           f"Marathon checks port {options.health_port} (ENDPOINT_MESH_HEALTH)")
    path = os.path.join(options.config_dir, "bootstrap.json")
    os.makedirs(options.config_dir, exist_ok=True)
    write_atomic(path, json.dumps(bootstrap, indent=1, sort_keys=True))
    LOG.info("proxy %s: starting Envoy (%s) with %s", options.proxy, options.envoy, path)
    # A dynamic base id: several sidecars share an agent in host networking.
    envoy = subprocess.Popen([options.envoy, "-c", path, "--log-level", "warning", "--use-dynamic-base-id",
                              "--base-id-path", os.path.join(options.config_dir, "base-id"), "--drain-time-s", "1"])
    while envoy.poll() is None and not stop.is_set():
        stop.wait(0.2)
    stop.set()  # Envoy exited: the agent stops too
    if envoy.poll() is None:
        envoy.send_signal(signal.SIGTERM)
        try:
            envoy.wait(10)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
    if failed:
        raise SidecarError(str(failed[0]))
    return envoy.returncode if envoy.returncode > 0 else 0
