"""The Kubernetes registry: watches one cluster's Services, pods, EndpointSlices and the Istio
resources of meshwright's CRDs, and publishes what they mean to the mesh
(registry/kubernetes.py translates) whenever they change.

Each kind has a watcher thread of its own, as client-go's reflectors: list, then watch from
the list's resourceVersion with bookmarks (which move the resourceVersion on without an
object); a watch the API server ends is started again from the last resourceVersion seen; one
it answers with 410 Gone (the resourceVersion is older than it keeps) lists again and replaces
what was known of that kind. An API server away: the watcher retries with backoff, the mesh
keeps the last view published, and the relist on return publishes what changed meanwhile.
An Istio kind whose CRD is not installed is listed again every few seconds.

Changes are gathered for a short while (50 ms quiet, 200 ms at most: under steady churn the
bound is the delay, so istiod's 1 s would be the p99 alone) and published as what changed
(serve/registries.py ViewChanges): a pod event translates that pod again, an EndpointSlice
event the pods it lists (their readiness), an Istio resource's event that resource; a
publish costs what changed, not the cluster (bench/kubernetes.py, docs/kubernetes.md). A
Service's event (the pods its selector picks, their ports), a list (the first, or again after
a 410 or an error) and a kind found missing translate the whole view again, and publish how
it differs from the last one published (the whole of it the first time).
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import yaml
from kubernetes import client, config
from kubernetes.config import kube_config
from kubernetes.watch.watch import iter_resp_lines

from meshwright.registry.kubernetes import ClusterView, endpoint_readiness, istio_resource, meshed_services, mesh_resources, pod_workload
from meshwright.serve.certificates import ServiceAccountTokenRefused
from meshwright.serve.registries import ViewChanges
from meshwright.validate.crds import ISTIO_CRDS

# A kubeconfig the client cannot use (the CLI names it in its error).
KubeconfigError = kube_config.ConfigException

LOG = logging.getLogger("meshwright.serve")
WATCH_SECONDS = 300  # how long the API server keeps one watch open before we start the next
QUIET_SECONDS, MAX_WAIT_SECONDS = 0.05, 0.2
BACKOFF_SECONDS = (0.2, 0.5, 1, 2, 5)
MISSING_CRD_RETRY_SECONDS = 5


class Gone(Exception):
    """410: the resourceVersion watched from is older than the API server keeps."""


@dataclass(frozen=True)
class WatchedKind:
    """One kind of object: how to list (and watch) it, and where it is kept in the view."""

    name: str
    list_call: Callable  # list_call(**kwargs) -> an urllib3 response (_preload_content=False)
    store: Callable[[ClusterView], dict]
    key: Callable[[dict], tuple]
    api_version: str = "v1"

    def completed(self, obj: dict) -> dict:
        """obj with its apiVersion and kind (a list's items may come without them)."""
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.name)
        return obj


def _namespaced_key(obj: dict) -> tuple:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def watched_kinds(api: client.ApiClient) -> list[WatchedKind]:
    core, discovery, custom = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    kinds = [
        WatchedKind("Service", core.list_service_for_all_namespaces, lambda v: v.services, _namespaced_key),
        WatchedKind("Pod", core.list_pod_for_all_namespaces, lambda v: v.pods, _namespaced_key),
        WatchedKind("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces, lambda v: v.endpoint_slices, _namespaced_key, "discovery.k8s.io/v1"),
    ]
    for kind, (group, versions, plural, dummy) in sorted(ISTIO_CRDS.items()):
        call = _custom_objects_lister(custom, group, versions[0], plural)
        kinds.append(WatchedKind(kind, call, lambda v: v.istio, lambda obj, kind=kind: (kind, *_namespaced_key(obj)), f"{group}/{versions[0]}"))
    return kinds


def _custom_objects_lister(custom, group: str, version: str, plural: str):
    """The list (and watch) call of one custom resource's objects in every namespace."""
    return lambda **kwargs: custom.list_cluster_custom_object(group, version, plural, **kwargs)


def read_kubeconfig(path: str) -> dict:
    """A kubeconfig file's content; ValueError when it is not one (OSError when unreadable)."""
    with open(path) as stream:
        try:
            content = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            raise ValueError(f"not YAML: {error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("contexts"), list) or not content.get("current-context"):
        raise ValueError("not a kubeconfig: a mapping with clusters, users, contexts and a current-context")
    return content


def current_cluster_name(kubeconfig: dict) -> str:
    """The cluster of the kubeconfig's current context."""
    for context in kubeconfig["contexts"]:
        if isinstance(context, dict) and context.get("name") == kubeconfig["current-context"]:
            return str((context.get("context") or {}).get("cluster", ""))
    raise ValueError(f"its current-context {kubeconfig['current-context']!r} is not among its contexts")


def cluster_configuration(kubeconfig: dict | None) -> client.Configuration:
    """How to reach the cluster: through a kubeconfig's current context, else in-cluster (run as a pod)."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config_from_dict(kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return configuration


class KubernetesRegistry:
    """A registry (serve/registries.py) of one cluster."""

    def __init__(self, name: str, configuration: client.Configuration):
        self.name = name
        self.configuration = configuration
        configuration = copy.copy(configuration)
        # A connection per watch (each holds one open), and a few for lists.
        configuration.connection_pool_maxsize = len(ISTIO_CRDS) + 8
        api = client.ApiClient(configuration)
        self.view = ClusterView()
        self.relists: dict[str, int] = {}  # per kind: lists after the first (410 Gone, errors), for status and tests
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._responses: dict[str, object] = {}
        self._threads: list[threading.Thread] = []
        self._publish = None
        self._translated: dict = {}  # mesh_resources' cache: each object translated once per version
        # What was published last, by key (None: nothing yet), and the key each object's
        # resource has in it (("Pod", ns, name) or an Istio kind's (kind, ns, name)).
        self._published: dict[tuple, object] | None = None
        self._key_of: dict[tuple, tuple] = {}
        # What changed since: the whole view (a list, a Service), or these pods and Istio objects.
        self._whole = True
        self._dirty: set[tuple] = set()
        self._slice_pods: dict[tuple, frozenset] = {}  # EndpointSlice -> the pods it lists
        self._listing: dict[tuple, set] = {}  # pod -> the EndpointSlices listing it
        self._selecting = None  # meshed_services' index, as of the last whole translation
        self._synced: set[str] = set()
        self._kinds = watched_kinds(api)

    def start(self, publish) -> None:
        self._publish = publish
        for kind in self._kinds:
            thread = threading.Thread(target=self._run_kind, args=(kind,), name=f"k8s-{kind.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        publisher = threading.Thread(target=self._run_publisher, name="k8s-publish", daemon=True)
        publisher.start()
        self._threads.append(publisher)

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        for response in list(self._responses.values()):
            _close(response)
        deadline = time.monotonic() + 2  # the threads are daemons: one blocked in a read does not hold the process
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def token_reviewer(self) -> "TokenReviewer":
        """Reviews the service-account tokens of this cluster's pods (the CSR service)."""
        return TokenReviewer(self.configuration)

    def synced(self) -> bool:
        """Whether every kind has been listed once (and so the first publish can be whole)."""
        return len(self._synced) == len(self._kinds)

    # Watching.

    def _run_kind(self, kind: WatchedKind) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list(kind)
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(kind, version)
            except Gone:
                LOG.info("%s: %s watch expired (410 Gone): listing again", self.name, kind.name)
            except client.ApiException as error:
                if error.status == 404 and kind.name in ISTIO_CRDS:
                    self._forget(kind)  # its CRD is not installed: nothing of it; look again later
                    self._stop.wait(MISSING_CRD_RETRY_SECONDS)
                    continue
                failures += 1
                LOG.warning("%s: %s: %s %s; retrying", self.name, kind.name, error.status, error.reason)
            except Exception as error:  # the API server away, a connection cut: retry, keep the last view
                if self._stop.is_set():
                    return
                failures += 1
                LOG.warning("%s: %s: %s; retrying", self.name, kind.name, error)
            self.relists[kind.name] = self.relists.get(kind.name, 0) + 1
            self._stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)] if failures else 0)

    def _list(self, kind: WatchedKind) -> str:
        response = kind.list_call(_preload_content=False)
        listed = json.loads(response.data)
        objects = {kind.key(obj): kind.completed(obj) for obj in listed.get("items") or []}
        with self._lock:
            store = kind.store(self.view)
            for key in [key for key in store if self._owns(kind, key)]:
                del store[key]
            store.update(objects)
            self._whole = True
        self._mark_synced(kind)
        self._changed.set()
        return listed["metadata"]["resourceVersion"]

    @staticmethod
    def _owns(kind: WatchedKind, key: tuple) -> bool:
        """Whether a key of a shared store (the Istio kinds share view.istio) is of kind."""
        return kind.name not in ISTIO_CRDS or key[0] == kind.name

    def _forget(self, kind: WatchedKind) -> None:
        with self._lock:
            store = kind.store(self.view)
            for key in [key for key in store if self._owns(kind, key)]:
                del store[key]
            self._synced.add(kind.name)
            self._whole = True
        self._changed.set()

    def _mark_synced(self, kind: WatchedKind) -> None:
        with self._lock:
            self._synced.add(kind.name)

    def _watch(self, kind: WatchedKind, version: str) -> str:
        """One watch from version; the resourceVersion to go on from when it ends."""
        response = kind.list_call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                                  timeout_seconds=WATCH_SECONDS, _preload_content=False, _request_timeout=(10, WATCH_SECONDS + 30))
        self._responses[kind.name] = response
        if self._stop.is_set():  # stop() ran between the list and this watch: it did not see this response
            _close(response)
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    break
                if line:
                    version = self._apply_event(kind, json.loads(line), version)
        finally:
            self._responses.pop(kind.name, None)
            _close(response)
        return version

    def _apply_event(self, kind: WatchedKind, event: dict, version: str) -> str:
        kind_of_event, obj = event.get("type"), event.get("object") or {}
        if kind_of_event == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", ""))
            raise client.ApiException(status=obj.get("code"), reason=obj.get("message"))
        version = obj.get("metadata", {}).get("resourceVersion", version)
        if kind_of_event == "BOOKMARK":
            return version
        with self._lock:
            store, key = kind.store(self.view), kind.key(obj)
            if kind_of_event == "DELETED":
                store.pop(key, None)
            else:
                store[key] = kind.completed(obj)
            self._touched(kind.name, key, store.get(key))
        self._changed.set()
        return version

    def _touched(self, kind: str, key: tuple, obj: dict | None) -> None:
        """What an event changed, for the next publish (under the lock)."""
        if kind == "Pod":
            self._dirty.add(("Pod", *key))
        elif kind == "EndpointSlice":  # the readiness of the pods it listed and lists
            listed = frozenset(_listed_pods(key, obj)) if obj is not None else frozenset()
            before = self._slice_pods.pop(key, frozenset())
            if listed:
                self._slice_pods[key] = listed
            for pod in before - listed:
                self._listing.get(pod, set()).discard(key)
            for pod in listed:
                self._listing.setdefault(pod, set()).add(key)
            self._dirty.update(("Pod", *pod) for pod in before | listed)
        elif kind in ISTIO_CRDS:
            self._dirty.add(key)
        else:  # a Service: which pods it selects, their ports
            self._whole = True

    # Publishing.

    def _run_publisher(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            self._debounce()
            if not self.synced():
                continue  # a first view with kinds missing would remove their resources for a moment
            try:
                self._publish_view()
            except Exception:  # a bug must not stop publishing: the plane keeps the last good view
                LOG.exception("%s: publishing the cluster's view failed", self.name)

    def _debounce(self) -> None:
        first = time.monotonic()
        self._changed.clear()
        while not self._stop.is_set() and time.monotonic() - first < MAX_WAIT_SECONDS:
            if not self._changed.wait(QUIET_SECONDS):
                return
            self._changed.clear()

    def _publish_view(self) -> None:
        with self._lock:
            update, published = self._view_update()
        if update is None:
            return
        try:
            self._publish(update)
        except Exception:
            with self._lock:
                self._whole = True  # what it missed is in the next publish
            raise
        self._published = published

    def _view_update(self) -> tuple[list | ViewChanges | None, dict]:
        """What to publish (the whole view the first time, else what changed; None: nothing)
        and the view published after it (under the lock)."""
        if self._whole:
            self._whole, self._dirty = False, set()
            resources = self._whole_view()
            after = {r.key: r for r in resources}
            if self._published is None:
                return resources, after
            changes = {key: r for key, r in after.items() if self._published.get(key) != r}
            changes.update((key, None) for key in sorted(self._published.keys() - after.keys()))
        else:
            after = dict(self._published)
            changes = self._dirty_changes(after)
        return (ViewChanges(changes) if changes else None), after

    def _whole_view(self) -> list:
        """Every resource of the cluster (mesh_resources), with the indexes the next events
        are translated with."""
        resources = mesh_resources(self.name, self.view, self._translated)
        self._selecting = meshed_services(self.view)[1]
        self._slice_pods = {key: frozenset(_listed_pods(key, obj)) for key, obj in self.view.endpoint_slices.items()}
        self._listing = {}
        for key, pods in self._slice_pods.items():
            for pod in pods:
                self._listing.setdefault(pod, set()).add(key)
        self._key_of = {("Pod", r.namespace, r.name): r.key for r in resources if r.kind == "WorkloadEntry"}
        self._key_of.update((key, istio_resource(self.name, obj).key) for key, obj in self.view.istio.items())
        return resources

    def _dirty_changes(self, view: dict) -> dict:
        """The changes of the pods and Istio objects events touched, applied to view."""
        changes = {}
        for obj_key in sorted(self._dirty):  # in a stable order: a problem is reported on the first
            resource = self._translated_now(obj_key)
            key = resource.key if resource is not None else self._key_of.get(obj_key)
            if key is None or view.get(key) == resource:
                continue
            if resource is None:
                view.pop(key, None)
                self._key_of.pop(obj_key, None)
            else:
                view[key] = resource
                self._key_of[obj_key] = key
            changes[key] = resource
        self._dirty = set()
        return changes

    def _translated_now(self, obj_key: tuple):
        """The resource an object makes now (None: none, or it is gone)."""
        if obj_key[0] == "Pod":
            pod_key = obj_key[1:]
            pod = self.view.pods.get(pod_key)
            if pod is None:
                return None
            slices = [self.view.endpoint_slices[key] for key in sorted(self._listing.get(pod_key, ())) if key in self.view.endpoint_slices]
            return pod_workload(self.name, pod_key, pod, self._selecting, endpoint_readiness(slices).get(pod_key))
        obj = self.view.istio.get(obj_key)
        return None if obj is None else istio_resource(self.name, obj)


def _listed_pods(slice_key: tuple, endpoint_slice: dict) -> list[tuple[str, str]]:
    """The pods (namespace, name) an EndpointSlice lists."""
    return [((endpoint.get("targetRef") or {}).get("namespace") or slice_key[0], endpoint["targetRef"]["name"])
            for endpoint in endpoint_slice.get("endpoints") or [] if (endpoint.get("targetRef") or {}).get("kind") == "Pod"]


def _close(response) -> None:
    """End a response another thread may be blocked reading: shutting its socket down wakes
    that read (closing the response alone would wait for the next byte)."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    try:
        if sock is not None:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket under TLS: no TLS goodbye to wait for
        response.close()
    except Exception:  # closing a connection another thread reads from: whatever it says, it is closed
        pass


# The audience of the projected service-account tokens pods send with their CSR (the injected
# pod's token volume asks for it): a token made for anything else is refused.
TOKEN_AUDIENCE = "meshwright"
_SERVICE_ACCOUNT_USER = "system:serviceaccount:"
_POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"


@dataclass(frozen=True)
class ReviewedToken:
    namespace: str
    service_account: str
    pod: str | None  # the pod a bound token was made for


def review_token(api: client.ApiClient, token: str, audience: str = TOKEN_AUDIENCE) -> ReviewedToken:
    """Who a service-account token proves, as the API server says (a TokenReview); TokenRefused
    when it proves nothing, no service account, or was made for another audience."""
    review = client.AuthenticationV1Api(api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience])))
    status = review.status
    if not status.authenticated:
        raise ServiceAccountTokenRefused(f"the API server does not accept the token for the audience {audience!r}: {status.error or 'not authenticated'}")
    username = status.user.username or ""
    if not username.startswith(_SERVICE_ACCOUNT_USER) or username.count(":") != 3:
        raise ServiceAccountTokenRefused(f"the token is {username!r}'s, not a service account's")
    namespace, service_account = username[len(_SERVICE_ACCOUNT_USER):].split(":")
    pods = (status.user.extra or {}).get(_POD_NAME_EXTRA) or []
    return ReviewedToken(namespace, service_account, pods[0] if pods else None)


class TokenReviewer:
    """Reviews tokens with one cluster's API server (the registry's credentials, which need
    `create` on tokenreviews.authentication.k8s.io)."""

    def __init__(self, configuration: client.Configuration, audience: str = TOKEN_AUDIENCE):
        self.api, self.audience = client.ApiClient(configuration), audience

    def review(self, token: str) -> ReviewedToken:
        try:
            return review_token(self.api, token, self.audience)
        except client.ApiException as error:
            raise ServiceAccountTokenRefused(f"the API server could not review the token: {error.status} {error.reason}") from None
