"""The mesh's roots in every namespace of a cluster, as istiod's namespace controller publishes
them: the ConfigMap `istio-ca-root-cert` with the key `root-cert.pem`. Injected pods mount it
(deliver/kube_inject.py) and their agents trust the CSR service with it, so a namespace
without it has pods that cannot start.

Two watches (list, then watch from the list's resourceVersion; 410 Gone or an error lists
again, with backoff), namespaces and the ConfigMaps of that name, tell which namespaces lack
the roots or hold other ones; each is written by server-side apply (field manager
`meshwright`). So a new namespace gets it at once, and one that someone edits or deletes is put
back. The roots are read again (the `--ca` file) every 2 s: a root rotation that
changes the bundle (old and new roots) reaches every namespace without waiting for serve's
restart. Kubernetes' own namespaces (kube-system, kube-public, kube-node-lease) and
terminating ones are left alone, as istiod does.

The control plane's credentials need `list` and `watch` on namespaces and configmaps, and
`create` and `patch` on configmaps (roles/kubernetes_mesh grants them).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

LOG = logging.getLogger("meshwright.serve")
CONFIG_MAP, KEY = "istio-ca-root-cert", "root-cert.pem"
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
RECHECK_SECONDS = 2.0  # how often the roots file is read again
WATCH_SECONDS = 300
BACKOFF_SECONDS = (0.2, 0.5, 1, 2, 5)


class _Expired(Exception):
    """410 Gone in a watch: list again."""


def config_map(namespace: str, roots: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": namespace, "labels": {"istio.io/config": "true"}},
            "data": {KEY: roots}}


class RootCertPublisher:
    """Keeps istio-ca-root-cert in step with read_roots() in every namespace of one cluster."""

    def __init__(self, cluster: str, configuration: client.Configuration, read_roots: Callable[[], str]):
        self.cluster, self.read_roots = cluster, read_roots
        self.core = client.CoreV1Api(client.ApiClient(configuration))
        self.active: dict[str, bool] = {}  # namespace -> may hold the ConfigMap (not terminating, not Kubernetes' own)
        self.held: dict[str, str] = {}  # namespace -> the root-cert.pem its ConfigMap holds now
        self.writes = 0
        self._synced: set[str] = set()
        self._lock, self._changed, self._stop = threading.Lock(), threading.Event(), threading.Event()

    def start(self) -> None:
        follows = (("namespaces", self.core.list_namespace, self._remember_namespace, self.active),
                   ("configmaps", self._list_config_maps, self._remember_config_map, self.held))
        for what, list_call, remember, store in follows:
            threading.Thread(target=self._follow, args=(what, list_call, remember, store), name=f"root-cert-{what}", daemon=True).start()
        threading.Thread(target=self._run, name="root-cert-publish", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def _list_config_maps(self, **kwargs):
        return self.core.list_config_map_for_all_namespaces(field_selector=f"metadata.name={CONFIG_MAP}", **kwargs)

    def _remember_namespace(self, namespace: dict, deleted: bool) -> None:
        name = namespace["metadata"]["name"]
        if deleted:
            self.active.pop(name, None)
            return
        terminating = namespace["metadata"].get("deletionTimestamp") or (namespace.get("status") or {}).get("phase") == "Terminating"
        self.active[name] = name not in IGNORED_NAMESPACES and not terminating

    def _remember_config_map(self, held: dict, deleted: bool) -> None:
        namespace = held["metadata"]["namespace"]
        if deleted:
            self.held.pop(namespace, None)
        else:
            self.held[namespace] = (held.get("data") or {}).get(KEY, "")

    # ---- following the API server ----

    def _follow(self, what: str, list_call, remember, store: dict) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list(what, list_call, remember, store)
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(list_call, remember, version)
            except _Expired:
                LOG.info("%s: %s watch expired (410 Gone): listing again", self.cluster, what)
            except Exception as error:  # the API server away or refusing: retry, keep what was known
                failures += 1
                LOG.warning("%s: istio-ca-root-cert: %s: %s; retrying", self.cluster, what, _reason(error))
            self._stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)] if failures else 0)

    def _list(self, what: str, list_call, remember, store: dict) -> str:
        listed = json.loads(list_call(_preload_content=False).data)
        with self._lock:
            store.clear()
            for item in listed.get("items") or []:
                remember(item, deleted=False)
            self._synced.add(what)
        self._changed.set()
        return listed["metadata"]["resourceVersion"]

    def _watch(self, list_call, remember, version: str) -> str:
        response = list_call(watch=True, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
                             _preload_content=False, _request_timeout=(10, WATCH_SECONDS + 30))
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    break
                event = json.loads(line) if line else {}
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise RuntimeError(obj.get("message", "watch error"))
                version = (obj.get("metadata") or {}).get("resourceVersion", version)
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    with self._lock:
                        remember(obj, deleted=event["type"] == "DELETED")
                    self._changed.set()
        finally:
            response.release_conn()
        return version

    # ---- publishing ----

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(RECHECK_SECONDS)
            self._changed.clear()
            if self._stop.is_set() or len(self._synced) < 2:
                continue
            try:
                roots = self.read_roots()
            except OSError as error:
                LOG.warning("%s: istio-ca-root-cert: cannot read the roots: %s", self.cluster, error)
                continue
            with self._lock:
                stale = sorted(name for name, active in self.active.items() if active and self.held.get(name) != roots)
            for namespace in stale:
                self._apply(namespace, roots)

    def _apply(self, namespace: str, roots: str) -> None:
        try:
            self.core.patch_namespaced_config_map(CONFIG_MAP, namespace, config_map(namespace, roots), field_manager="meshwright", force=True,
                                                  _content_type="application/apply-patch+yaml")
        except client.ApiException as error:
            LOG.warning("%s: istio-ca-root-cert in %s: %s", self.cluster, namespace, _reason(error))
            return
        with self._lock:
            self.held[namespace] = roots
            self.writes += 1
        LOG.info("%s: istio-ca-root-cert in %s: the mesh's roots published", self.cluster, namespace)


def _reason(error: Exception) -> str:
    if isinstance(error, client.ApiException):
        return f"{error.status} {error.reason}"
    return str(error)
