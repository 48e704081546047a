"""The app's probes in an injected pod, as Istio rewrites them (its injector's
rewriteAppHTTPProbers and pilot-agent's status server on 15020): one home for both ends.

Why: the kubelet probes from the node, in plaintext. In an injected pod its request to the app's
port is captured by the inbound listener, which under STRICT mTLS refuses a client without a
mesh certificate (and an AuthorizationPolicy refuses a caller without a principal), so the
app's HTTP probe fails and the pod is never Ready; a TCP probe is accepted by Envoy itself
whatever the app does. So the injector points each httpGet and tcpSocket probe of the app's
containers at the sidecar's port 15020 (left out of the capture), path
`/app-health/<container>/<readyz|livez|startupz>`, and hands the original probes to the sidecar
in ISTIO_KUBE_APP_PROBERS (Istio's variable and JSON shape); the sidecar (meshwright.pod)
answers those paths by probing the app itself inside the pod, from 127.0.0.6 (the address the
capture rules never redirect) to the pod's address, as Istio's agent does.

A pod opts out with the annotation `sidecar.istio.io/rewriteAppHTTPProbers: "false"`. A probe
with a `host` (it does not probe this pod), gRPC and exec probes are left as they are.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import ssl
from dataclasses import dataclass

REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
PROBERS_VARIABLE = "ISTIO_KUBE_APP_PROBERS"
STATUS_PORT = 15020  # pilot-agent's status port: excluded from inbound capture (kube_inject PROXY_PORTS)
PROBE_SOURCE = "127.0.0.6"  # never captured (pod.py capture_rules): the probe reaches the app, not Envoy
# The container's probe field and the path's last part, as Istio names them.
PROBE_KINDS = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))


class BadProbeSettings(ValueError):
    """An annotation or probe the injector cannot rewrite, with what to change."""


def wants_rewrite(annotations: dict) -> bool:
    value = annotations.get(REWRITE_ANNOTATION, "true")
    if value.lower() not in ("true", "false"):
        raise BadProbeSettings(f"metadata.annotations.{REWRITE_ANNOTATION}: {value!r} is not \"true\" or \"false\"")
    return value.lower() == "true"


def app_health_path(container: str, kind: str) -> str:
    return f"/app-health/{container}/{kind}"


def _port_number(container: dict, port, where: str) -> int:
    """A probe's port: a number, or the name of one of the container's ports (resolved, as Istio does)."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise BadProbeSettings(f"{where}.port: {port!r} names no port of the container")


def _prober(container: dict, probe: dict, where: str) -> dict | None:
    """What the sidecar must do for probe (Istio's shape), or None when it is not rewritten."""
    timeout = {"timeoutSeconds": probe.get("timeoutSeconds", 1)}
    if isinstance(probe.get("httpGet"), dict):
        get = probe["httpGet"]
        if get.get("host") or get.get("port") == STATUS_PORT:
            return None  # it probes another host, or it is rewritten already
        target = {"path": get.get("path", "/"), "port": _port_number(container, get.get("port"), f"{where}.httpGet"),
                  "scheme": get.get("scheme", "HTTP")}
        if get.get("httpHeaders"):
            target["httpHeaders"] = get["httpHeaders"]
        return {"httpGet": target, **timeout}
    if isinstance(probe.get("tcpSocket"), dict) and not probe["tcpSocket"].get("host"):
        return {"tcpSocket": {"port": _port_number(container, probe["tcpSocket"].get("port"), f"{where}.tcpSocket")}, **timeout}
    return None


def rewrite_probes(containers: list[dict]) -> tuple[list[dict], dict]:
    """(the containers with their httpGet and tcpSocket probes sent to the sidecar, the probers
    by path); containers are not changed in place."""
    rewritten, probers = [], {}
    for index, container in enumerate(containers):
        container = copy.deepcopy(container)
        for field, kind in PROBE_KINDS:
            probe = container.get(field)
            prober = _prober(container, probe, f"spec.containers[{index}].{field}") if isinstance(probe, dict) else None
            if prober is None:
                continue
            path = app_health_path(container["name"], kind)
            probers[path] = prober
            kept = {key: value for key, value in probe.items() if key not in ("httpGet", "tcpSocket")}
            container[field] = {**kept, "httpGet": {"path": path, "port": STATUS_PORT, "scheme": "HTTP"}}
        rewritten.append(container)
    return rewritten, probers


def probers_text(probers: dict) -> str:
    return json.dumps(probers, sort_keys=True, separators=(",", ":"))


def parse_probers(text: str) -> dict:
    """ISTIO_KUBE_APP_PROBERS as the injector writes it; ValueError says what is wrong."""
    probers = json.loads(text) if text else {}
    if not isinstance(probers, dict) or not all(isinstance(p, dict) and ("httpGet" in p or "tcpSocket" in p) for p in probers.values()):
        raise ValueError("expected a JSON object of paths to probes with httpGet or tcpSocket")
    return probers


# ---- the sidecar's end: probing the app from inside the pod ----------------------------------


@dataclass(frozen=True)
class ProbeResult:
    status: int  # what the sidecar answers the kubelet: the app's status, or 500 when it cannot be reached
    reason: str


def run_probe(prober: dict, pod_address: str) -> ProbeResult:
    """The original probe, made from inside the pod (the kubelet's success is 200-399)."""
    timeout = float(prober.get("timeoutSeconds") or 1)
    if "tcpSocket" in prober:
        try:
            socket.create_connection((pod_address, int(prober["tcpSocket"]["port"])), timeout, (PROBE_SOURCE, 0)).close()
        except OSError as error:
            return ProbeResult(500, f"tcp connect: {error}")
        return ProbeResult(200, "connected")
    get = prober["httpGet"]
    port = int(get["port"])
    if str(get.get("scheme", "HTTP")).upper() == "HTTPS":  # as the kubelet: the app's certificate is not verified
        connection = http.client.HTTPSConnection(pod_address, port, timeout=timeout, source_address=(PROBE_SOURCE, 0),
                                                 context=ssl._create_unverified_context())  # pylint: disable=protected-access
    else:
        connection = http.client.HTTPConnection(pod_address, port, timeout=timeout, source_address=(PROBE_SOURCE, 0))
    headers = {"User-Agent": "kube-probe/meshwright", **{h["name"]: h["value"] for h in get.get("httpHeaders") or []}}
    try:
        connection.request("GET", get.get("path", "/"), headers=headers)
        response = connection.getresponse()
        response.read()
        return ProbeResult(response.status, response.reason)
    except (OSError, http.client.HTTPException) as error:
        return ProbeResult(500, f"http get: {error}")
    finally:
        connection.close()
