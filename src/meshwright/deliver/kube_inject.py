"""Sidecar injection into a Kubernetes pod (istiod's sidecar injector): the pure function the
mutating webhook (serve/admission.py) calls.

A pod gets, as Istio's injected pods do:
- an init container `istio-init` that sets up the iptables capture in the pod's network
  namespace (NET_ADMIN, NET_RAW), leaving out the ports and ranges of Istio's
  `traffic.sidecar.istio.io/*` annotations;
- a container `istio-proxy` (the proxy image: Envoy and `meshwright agent`) running as uid 1337,
  told its pod, namespace, service account and IP through the downward API and the control
  plane's addresses; its readiness probe is Envoy's /healthz/ready on 15021, its stats port 15090;
- a projected service-account token for the audience `meshwright` (the agent's first CSR,
  serve/kubernetes.py review_token), the mesh's roots from the ConfigMap `istio-ca-root-cert`
  of the pod's namespace (key `root-cert.pem`, as istiod publishes it: the agent trusts the CSR
  service with them), and empty folders for Envoy's config and certificates;
- the annotation `sidecar.istio.io/status` naming what was injected, and the label
  `security.istio.io/tlsMode: istio`.

Injecting an injected pod changes nothing. A pod that cannot be injected (host network, a
container already named istio-proxy) is refused with the reason: never half-injected.

The app containers' httpGet and tcpSocket probes are sent through the sidecar's port 15020, as
Istio's rewriteAppHTTPProbers does (deliver/kube_probes.py): under STRICT mTLS the kubelet's
plaintext probe could not reach the app.

Not done yet: `sidecar.istio.io/proxyCPU`-style resource annotations, native sidecars (init container with
restartPolicy Always).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from meshwright.deliver.kube_probes import PROBERS_VARIABLE, BadProbeSettings, probers_text, rewrite_probes, wants_rewrite

PROXY_NAME, INIT_NAME = "istio-proxy", "istio-init"
STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
TOKEN_VOLUME, ENVOY_VOLUME, CERTS_VOLUME = "istio-token", "istio-envoy", "istio-certs"
ROOTS_VOLUME, ROOTS_CONFIG_MAP = "istiod-ca-cert", "istio-ca-root-cert"
TOKEN_PATH = "/var/run/secrets/tokens"
ROOTS_PATH = "/var/run/secrets/istio"
CERTS_PATH = "/etc/istio/proxy/certs"
PROXY_UID = 1337
# Istio's capture annotations: (annotation, the capture command's option).
CAPTURE_ANNOTATIONS = (
    ("traffic.sidecar.istio.io/includeInboundPorts", "--include-inbound-ports"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "--exclude-inbound-ports"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "--exclude-outbound-ports"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "--exclude-outbound-ip-ranges"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "--include-outbound-ip-ranges"),
)
# The proxy's own ports, never captured (admin, outbound, inbound, health, stats, agent).
PROXY_PORTS = "15000,15001,15006,15020,15021,15090"


class NotInjectable(ValueError):
    """A pod the injector refuses, with the reason (the admission message)."""


@dataclass(frozen=True)
class InjectionSettings:
    image: str  # the proxy image (Envoy + meshwright agent), name and tag
    xds_address: str  # HOST:PORT of the control plane's xDS server, as pods reach it
    csr_address: str  # HOST:PORT of its CSR service's join port
    trust_domain: str = "cluster.local"
    token_audience: str = "meshwright"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "2"
    memory_limit: str = "1Gi"


def wants_injection(pod: dict, namespace_enabled: bool) -> bool:
    """Istio's rule: the pod's sidecar.istio.io/inject (label, then annotation) wins, else its namespace's label."""
    metadata = pod.get("metadata") or {}
    for where in ("labels", "annotations"):
        value = (metadata.get(where) or {}).get(INJECT_ANNOTATION)
        if value is not None:
            return value.lower() == "true"
    return namespace_enabled


def is_injected(pod: dict) -> bool:
    return STATUS_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def injected_pod(pod: dict, settings: InjectionSettings) -> dict:
    """The pod with its sidecar; the pod itself when it is injected already. NotInjectable when it cannot be."""
    if is_injected(pod):
        return pod
    _check_injectable(pod)
    out = copy.deepcopy(pod)
    metadata, spec = out.setdefault("metadata", {}), out["spec"]
    annotations = metadata.setdefault("annotations", {})
    containers, probers = _app_containers(spec["containers"], annotations)
    spec["initContainers"] = [*(spec.get("initContainers") or []), init_container(annotations, settings)]
    spec["containers"] = [*containers, proxy_container(settings, probers)]
    spec["volumes"] = [*(spec.get("volumes") or []), *proxy_volumes(settings)]
    metadata.setdefault("labels", {})["security.istio.io/tlsMode"] = "istio"
    annotations[STATUS_ANNOTATION] = json.dumps({"initContainers": [INIT_NAME], "containers": [PROXY_NAME],
                                                 "volumes": [TOKEN_VOLUME, ENVOY_VOLUME, CERTS_VOLUME, ROOTS_VOLUME]}, sort_keys=True)
    return out


def _check_injectable(pod: dict) -> None:
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list):
        raise NotInjectable("not a pod spec: spec.containers is missing")
    if spec.get("hostNetwork"):
        raise NotInjectable("spec.hostNetwork: a pod on the host's network cannot be injected (its capture would take the node's traffic): "
                            f"set the annotation {INJECT_ANNOTATION}: \"false\"")
    names = {c.get("name") for c in [*spec["containers"], *(spec.get("initContainers") or [])]}
    for taken in (PROXY_NAME, INIT_NAME):
        if taken in names:
            raise NotInjectable(f"spec: a container is already named {taken} and the pod is not injected "
                                f"(no {STATUS_ANNOTATION} annotation): rename it, or set {INJECT_ANNOTATION}: \"false\"")
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for taken in (TOKEN_VOLUME, ENVOY_VOLUME, CERTS_VOLUME, ROOTS_VOLUME):
        if taken in volumes:
            raise NotInjectable(f"spec.volumes: a volume is already named {taken}: rename it, or set {INJECT_ANNOTATION}: \"false\"")


def _app_containers(containers: list[dict], annotations: dict) -> tuple[list[dict], dict]:
    """The app's containers with their probes sent through the sidecar (unless the pod opts out), and the probers."""
    try:
        if not wants_rewrite(annotations):
            return containers, {}
        return rewrite_probes(containers)
    except BadProbeSettings as bad:
        raise NotInjectable(str(bad)) from None


def init_container(annotations: dict, settings: InjectionSettings) -> dict:
    """iptables capture in the pod's network namespace (uid 1337's traffic is the proxy's own)."""
    args = ["capture", "--proxy-uid", str(PROXY_UID), "--exclude-inbound-ports", PROXY_PORTS]
    for annotation, option in CAPTURE_ANNOTATIONS:
        if annotation in annotations:
            args += [option, annotations[annotation]]
    return {"name": INIT_NAME, "image": settings.image, "args": args,
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
            "resources": _resources(settings)}


def _field(path: str) -> dict:
    return {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def proxy_container(settings: InjectionSettings, probers: dict | None = None) -> dict:
    env = [
        {"name": "POD_NAME", **_field("metadata.name")},
        {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
        {"name": "INSTANCE_IP", **_field("status.podIP")},
        {"name": "SERVICE_ACCOUNT", **_field("spec.serviceAccountName")},
        {"name": "MESHWRIGHT_XDS_ADDRESS", "value": settings.xds_address},
        {"name": "MESHWRIGHT_CSR_ADDRESS", "value": settings.csr_address},
        {"name": "MESHWRIGHT_TRUST_DOMAIN", "value": settings.trust_domain},
        {"name": "MESHWRIGHT_TOKEN_FILE", "value": f"{TOKEN_PATH}/meshwright-token"},
        {"name": "MESHWRIGHT_CERTS_DIR", "value": CERTS_PATH},
        {"name": "MESHWRIGHT_CA_FILE", "value": f"{ROOTS_PATH}/root-cert.pem"},
    ]
    if probers:
        env.append({"name": PROBERS_VARIABLE, "value": probers_text(probers)})
    return {
        "name": PROXY_NAME, "image": settings.image, "args": ["proxy", "sidecar"], "env": env,
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "initialDelaySeconds": 1, "periodSeconds": 2,
                           "failureThreshold": 30},
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "resources": _resources(settings),
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True},
                         {"name": ENVOY_VOLUME, "mountPath": "/etc/istio/proxy"},
                         {"name": CERTS_VOLUME, "mountPath": CERTS_PATH},
                         {"name": ROOTS_VOLUME, "mountPath": ROOTS_PATH, "readOnly": True}],
    }


def proxy_volumes(settings: InjectionSettings) -> list[dict]:
    token = {"serviceAccountToken": {"audience": settings.token_audience, "expirationSeconds": 43200, "path": "meshwright-token"}}
    return [{"name": TOKEN_VOLUME, "projected": {"sources": [token]}},
            {"name": ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}},
            {"name": CERTS_VOLUME, "emptyDir": {"medium": "Memory"}},
            {"name": ROOTS_VOLUME, "configMap": {"name": ROOTS_CONFIG_MAP}}]


def _resources(settings: InjectionSettings) -> dict:
    return {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit}}


def injection_patch(pod: dict, settings: InjectionSettings) -> list[dict]:
    """The JSON Patch (RFC 6902) from pod to its injected form: what a mutating webhook answers."""
    injected = injected_pod(pod, settings)
    if injected is pod:
        return []
    return [{"op": "add", "path": path, "value": value} for path, value in (
        ("/metadata/labels", injected["metadata"]["labels"]),
        ("/metadata/annotations", injected["metadata"]["annotations"]),
        ("/spec/initContainers", injected["spec"]["initContainers"]),
        ("/spec/containers", injected["spec"]["containers"]),
        ("/spec/volumes", injected["spec"]["volumes"]),
    )]


# Workload kinds whose pod template kube-inject injects (istioctl kube-inject's list).
TEMPLATED_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"})


def injected_object(obj: dict, settings: InjectionSettings) -> dict:
    """A Kubernetes object as `meshwright kube-inject` writes it: a Pod injected, a workload's
    pod template injected (a CronJob's job template's), anything else as it was. A pod that
    opts out (sidecar.istio.io/inject: "false") is left as it is. NotInjectable names the object."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    try:
        if kind == "Pod":
            return injected_pod(obj, settings) if wants_injection(obj, namespace_enabled=True) else obj
        if kind in TEMPLATED_KINDS:
            return _with_template(obj, ("spec", "template"), settings)
        if kind == "CronJob":
            return _with_template(obj, ("spec", "jobTemplate", "spec", "template"), settings)
    except NotInjectable as refused:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise NotInjectable(f"{kind}/{name}: {refused}") from None
    return obj


def _with_template(obj: dict, path: tuple[str, ...], settings: InjectionSettings) -> dict:
    parent = obj
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    template = parent.get(path[-1]) if isinstance(parent, dict) else None
    if not isinstance(template, dict):
        raise NotInjectable(f"{'.'.join(path)}: missing (a {obj.get('kind')} needs a pod template)")
    if not wants_injection(template, namespace_enabled=True):
        return obj
    out = copy.deepcopy(obj)
    holder = out
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = injected_pod(template, settings)
    return out
