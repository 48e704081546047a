"""Which mutual TLS mode a workload's inbound port accepts: PeerAuthentication with Istio's
precedence. The most specific policy that sets a mode wins, UNSET inheriting from the next:
port level (of the workload policy) > workload (selector) > namespace > mesh (the root
namespace, istio-system, without selector) > the MeshConfig's defaultMtlsMode.

Without workload certificates (MeshConfig `certificates` unset) every port is plaintext.
"""

from __future__ import annotations

from meshwright.mesh import ROOT_NAMESPACE, Mesh
from meshwright.model.resource import Resource

STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"


def selector_of(policy: Resource) -> dict | None:
    """The matchLabels of a policy's selector, None when it has none (namespace-wide)."""
    selector = policy.spec.get("selector")
    return None if selector is None else selector["matchLabels"]


def governing_policies(mesh: Mesh, namespace: str, labels: tuple) -> tuple[Resource | None, Resource | None, Resource | None]:
    """(mesh-wide, namespace-wide, workload) PeerAuthentications of a workload; where several
    could apply at one level the first by name wins (Istio: the oldest), which validation
    reports as ambiguous."""

    def compute():
        levels = (
            mesh.without_selector("PeerAuthentication", ROOT_NAMESPACE),
            mesh.without_selector("PeerAuthentication", namespace),
            mesh.selecting("PeerAuthentication", namespace, dict(labels)),
        )
        return tuple(policies[0] if policies else None for policies in levels)

    return mesh.memo(("peer-authentication", namespace, labels), compute)


def _mode(settings: dict | None) -> str:
    return (settings or {}).get("mode", UNSET)


def mtls_mode(mesh: Mesh, namespace: str, labels: tuple, port: int) -> str:
    """STRICT, PERMISSIVE or DISABLE for a workload's (namespace, sorted label items) port."""
    if not mesh.settings.identity_enabled:
        return DISABLE
    mesh_wide, namespace_wide, workload = governing_policies(mesh, namespace, labels)
    mode = mesh.settings.default_mtls_mode
    for policy in (mesh_wide, namespace_wide, workload):
        if policy is not None and _mode(policy.spec.get("mtls")) != UNSET:
            mode = _mode(policy.spec.get("mtls"))
    if workload is not None:
        port_mode = _mode((workload.spec.get("portLevelMtls") or {}).get(port))
        if port_mode != UNSET:
            mode = port_mode
    return mode
