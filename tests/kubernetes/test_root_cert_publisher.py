"""The mesh's roots as the ConfigMap istio-ca-root-cert in every namespace (serve/root_cert_publisher.py),
on a real API server: existing and new namespaces get it, an edit or a deletion is put back,
Kubernetes' own namespaces are left alone, and a root rotation (the roots file changes) reaches
every namespace."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from meshwright.pki import ca
from meshwright.pki.ca import certificate_pem
from meshwright.serve.root_cert_publisher import RootCertPublisher

WAIT = 15
# Namespaces of each test: envtest has no namespace controller, so a deleted one stays terminating.
EXISTING, NEW, ROTATED = "roots-existing", "roots-new", "roots-rotated"


def held(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        return core.read_namespaced_config_map("istio-ca-root-cert", namespace).data.get("root-cert.pem")
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def wait_until(condition, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < WAIT, f"{what}: not within {WAIT} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def published(api_server, tmp_path, request):
    """A publisher following a roots file; the test's first namespace (its parameter) exists before it starts."""
    core = client.CoreV1Api(api_server.api_client())
    made = [request.param]
    core.create_namespace({"metadata": {"name": request.param}})
    roots = tmp_path / "roots.pem"
    roots.write_bytes(certificate_pem(ca.make_root("cluster.local").certificate))
    publisher = RootCertPublisher("kubernetes/test", api_server.configuration(), lambda: roots.read_text())
    publisher.start()
    try:
        yield core, roots, made
    finally:
        publisher.stop()
        for namespace in made:
            core.delete_namespace(namespace)


@pytest.mark.parametrize("published", [EXISTING], indirect=True)
def test_every_namespace_holds_the_mesh_roots_and_keeps_them(published):
    core, roots, made = published
    first = roots.read_text()
    wait_until(lambda: held(core, EXISTING) == first, "the roots in an existing namespace")
    assert held(core, "default") == first
    assert held(core, "kube-system") is None  # Kubernetes' own namespaces are left alone, as istiod does
    labels = core.read_namespaced_config_map("istio-ca-root-cert", EXISTING).metadata.labels
    assert labels == {"istio.io/config": "true"}

    core.create_namespace({"metadata": {"name": NEW}})
    made.append(NEW)
    created = wait_until(lambda: held(core, NEW) == first, "the roots in a new namespace")

    core.patch_namespaced_config_map("istio-ca-root-cert", EXISTING, {"data": {"root-cert.pem": "edited"}})
    edited = wait_until(lambda: held(core, EXISTING) == first, "an edited ConfigMap put back")
    core.delete_namespaced_config_map("istio-ca-root-cert", NEW)
    deleted = wait_until(lambda: held(core, NEW) == first, "a deleted ConfigMap made again")
    print(f"a new namespace got the roots in {created:.2f} s; an edit was put back in {edited:.2f} s, a deletion in {deleted:.2f} s")


@pytest.mark.parametrize("published", [ROTATED], indirect=True)
def test_a_root_rotation_reaches_every_namespace(published):
    core, roots, dummy = published
    old = roots.read_text()
    wait_until(lambda: held(core, ROTATED) == old, "the first roots")
    # rotate_certs' first step: the bundle holds the old root and the new one
    rotated = old + certificate_pem(ca.make_root("cluster.local").certificate).decode()
    roots.write_text(rotated)
    took = wait_until(lambda: all(held(core, ns) == rotated for ns in (ROTATED, "default")), "the rotated roots everywhere")
    print(f"the rotated roots reached every namespace in {took:.2f} s")
