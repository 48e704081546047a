"""Render proxies of a mesh into file sets: what the CLI writes and what Ansible ships.

Each proxy's bundle is its files (as deliver.files renders them for the directory they will
live in on the proxy's host) and a self-contained bootstrap for `envoy --mode validate`, so
the host can check the config with its own Envoy before swapping it in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Callable

from meshwright.check.pipeline import validate_mesh
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.build import compile_proxy
from meshwright.compile.capture import capture_settings
from meshwright.compile.proxy import ADMIN_PORT, HEALTH_PORT, STATS_PORT, find_proxy, list_proxies
from meshwright.compile.xds_bootstrap import XdsServer, compile_xds_bootstrap
from meshwright.deliver.class_template import class_files
from meshwright.deliver.files import RenderCache, bootstrap_file_name, certificates_dir, file_documents, serialize, serialize_files
from meshwright.deliver.validation_bootstrap import validation_bootstrap
from meshwright.mesh import Mesh, certificates_dir_problem, config_dir_problem
from meshwright.model.load import load_paths
from meshwright.pki.spiffe import spiffe_id
from meshwright.problems import Problem


class RenderError(Exception):
    """The mesh does not validate (problems), or a proxy asked for does not exist."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = problems or []
        super().__init__(message)


@dataclass(frozen=True)
class ProxyBundle:
    proxy: str
    kind: str  # sidecar or gateway
    files: dict[str, str]
    # Writes the validation bootstrap, when asked for (it is as big as all the files together)
    validation: Callable[[], str] = field(repr=False, compare=False)
    ports: dict[str, int]  # admin, health, stats: where to reach the running proxy
    # With mesh identity on: {spiffe_id, certs_dir} (the certificate it needs and where its
    # Envoy reads it); None when the mesh has no certificates (plaintext).
    identity: dict[str, str] | None = None
    # With iptables capture (interceptionMode REDIRECT): the capture ports, the proxy's own
    # ports and service name -> VIP for the host (compile/capture.py); None without.
    capture: dict | None = None
    # The run's file digests (file_digest), when it renders many proxies.
    digest_memo: dict | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def validation_bootstrap(self) -> str:
        """The whole config as one static bootstrap, for `envoy --mode validate`."""
        return self.validation()

    @property
    def digest(self) -> str:
        """SHA-256 over the files' names and SHA-256s, in name order: equal digests mean
        identical config."""
        sha = hashlib.sha256()
        for name in sorted(self.files):
            sha.update(name.encode() + b"\0" + file_digest(self.files[name], self.digest_memo) + b"\0")
        return sha.hexdigest()


def file_digest(text: str, memo: dict | None) -> bytes:
    """SHA-256 of a file's text; memo (id -> (text, digest)), a run's: the proxies of a class
    hold the same text objects for the files they share, hashed once."""
    if memo is None:
        return hashlib.sha256(text.encode()).digest()
    found = memo.get(id(text))
    if found is None:
        found = memo[id(text)] = (text, hashlib.sha256(text.encode()).digest())
    return found[1]


def load_mesh(paths: list[str]) -> Mesh:
    mesh, problems = validate_mesh(load_paths(paths))
    if problems:
        raise RenderError(f"{len(problems)} problem(s) in the mesh config", problems)
    return mesh


def check_config_dir(mesh: Mesh, config_dir: str) -> None:
    """RenderError when the config directory, or the certificates folder the MeshConfig puts
    beside it, is not where a proxy's files may go (docs/security.md)."""
    problem = config_dir_problem(config_dir)
    if not problem and mesh.settings.identity_enabled:
        problem = certificates_dir_problem(config_dir, mesh.settings.certificates_dir)
    if problem:
        raise RenderError(problem)


@cyclic_collector_paused()  # rendering makes trees and text, no cycles: the collector would walk the whole mesh
def bundle_proxy(mesh: Mesh, proxy_id: str, config_dir: str, fmt: str = "yaml", check_dirs: bool = True,
                 cache: RenderCache | None = None) -> ProxyBundle:
    """The proxy's bundle for config_dir on its host (check_dirs=False for a scratch folder
    that only `envoy --mode validate` sees). cache: the run's, when it renders many proxies."""
    if check_dirs:
        check_config_dir(mesh, config_dir)
    proxy = find_proxy(mesh, proxy_id)
    written = class_files(mesh, proxy, config_dir, fmt, cache, _validation_alone) if cache is not None else None
    if written is not None:  # the proxy's class written once: its files are pieces of that text
        return proxy_bundle(mesh, proxy, config_dir, *written, cache)
    documents = file_documents(compile_proxy(mesh, proxy), mesh.settings, config_dir, fmt, cache)
    bootstrap = documents[bootstrap_file_name(fmt)]  # validation_bootstrap copies it: never changed
    return proxy_bundle(mesh, proxy, config_dir, serialize_files(documents, fmt, cache),
                        lambda: _validation_alone(mesh, proxy, bootstrap, cache))


def _validation_alone(mesh: Mesh, proxy, bootstrap: dict, cache: RenderCache | None) -> str:
    memos = (cache.memo("static secrets"), cache.memo("secret names")) if cache else None
    config = compile_proxy(mesh, proxy)
    return serialize(validation_bootstrap(config, bootstrap, memos, mesh.settings.credentials_dir), "yaml", cache)


def proxy_bundle(mesh: Mesh, proxy, config_dir: str, files: dict[str, str], validation: Callable[[], str],
                 cache: RenderCache | None = None) -> ProxyBundle:
    """The bundle of these files, with what a host needs to know of the proxy; cache: the
    run's, whose file digests it shares."""
    ports = {"admin": proxy.port(ADMIN_PORT), "health": proxy.port(HEALTH_PORT), "stats": proxy.port(STATS_PORT)}
    identity = None
    if mesh.settings.identity_enabled:
        identity = {"spiffe_id": spiffe_id(mesh.settings.trust_domain, proxy.namespace, proxy.service_account),
                    "certs_dir": certificates_dir(mesh.settings, config_dir)}
    return ProxyBundle(proxy.id, proxy.kind, files, validation, ports, identity, capture_settings(mesh, proxy),
                       cache.memo("file digests") if cache is not None else None)


def xds_bundle(mesh: Mesh, bundle: ProxyBundle, addresses: list[tuple[str, int]], delta: bool = False, fmt: str = "yaml") -> ProxyBundle:
    """The bundle of a proxy delivered by xDS (docs/control-plane.md): one file, its bootstrap
    naming the control plane instances, with mTLS by the certificates of its certs folder."""
    if bundle.identity is None:
        raise RenderError(f"proxy {bundle.proxy}: delivery xds needs the mesh's certificates (MeshConfig certificates): the proxy "
                          "authenticates to the control plane with its workload certificate")
    if not addresses:
        raise RenderError(f"proxy {bundle.proxy}: delivery xds needs at least one control plane instance to connect to")
    proxy = find_proxy(mesh, bundle.proxy)
    server = XdsServer(tuple(addresses), bundle.identity["certs_dir"], delta)
    config = compile_proxy(mesh, proxy)
    bootstrap = compile_xds_bootstrap(proxy, mesh.settings, config.telemetry, server, config.stat_tags)
    text = serialize(bootstrap, fmt)
    return dataclasses.replace(bundle, files={bootstrap_file_name(fmt): text}, validation=lambda: text)


def bundle_mesh(paths: list[str], config_dirs: dict[str, str], fmt: str = "yaml") -> dict[str, ProxyBundle]:
    """Bundles of the proxies named in config_dirs (proxy id -> config dir on its host)."""
    return bundle_proxies(load_mesh(paths), config_dirs, fmt)


@cyclic_collector_paused()
def bundle_proxies(mesh: Mesh, config_dirs: dict[str, str], fmt: str = "yaml") -> dict[str, ProxyBundle]:
    """bundle_mesh for a mesh already loaded (whose warnings the caller shows)."""
    known = {p.id for p in list_proxies(mesh)}
    unknown = sorted(set(config_dirs) - known)
    if unknown:
        raise RenderError(f"no proxy named {', '.join(unknown)} in the mesh config (known: {', '.join(sorted(known)) or 'none'})")
    cache = RenderCache()  # proxies of a class share most of their config: each shared object is written once
    return {proxy_id: bundle_proxy(mesh, proxy_id, config_dirs[proxy_id], fmt, cache=cache) for proxy_id in sorted(config_dirs)}
