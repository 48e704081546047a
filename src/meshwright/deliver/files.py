"""File delivery: the proxy's resources as files in one directory that Envoy watches.

Envoy reads listeners and clusters from lds/cds files, each HTTP listener's routes from an
rds-*.yaml file and, with workload identity, its certificate and trust bundle from
sds-default/sds-rootca.yaml, all through `path_config_source` with `watched_directory`.
Files are replaced by rename inside the directory, which is what the watch reacts to, so a
re-render applies without a restart.

Endpoints travel inside their clusters (EDS clusters become STATIC ones with their load
assignment): Envoy holds an inotify instance per watched file, and the per-user limit (128 by
default) is shared by every Envoy of a host, so the number of files must not grow with the
number of services. An xDS server serves the same endpoints by EDS.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re

from meshwright.compile.bootstrap import compile_bootstrap
from meshwright.compile.build import ProxyConfig
from meshwright.compile.envoy_values import CLUSTER, HCM_FILTER, LISTENER, ROUTE_CONFIGURATION
from meshwright.compile.secrets import SECRET, with_secret_references, workload_secrets
from meshwright.deliver.yaml_text import TextCache, yaml_text
from meshwright.forked import available_workers, forked_map
from meshwright.mesh import MeshSettings

BOOTSTRAP = "bootstrap"


def with_inline_endpoints(clusters: list[dict], endpoints: list[dict]) -> list[dict]:
    """The clusters, each EDS cluster a copy that is STATIC with its load assignment (the
    others, and what the copies hold, are the same objects: shared, never changed)."""
    assignments = {e["cluster_name"]: e for e in endpoints}
    out = []
    for cluster in clusters:
        if cluster.get("type") == "EDS":
            cluster = {key: value for key, value in cluster.items() if key != "eds_cluster_config"}
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = assignments.get(cluster["name"], {"cluster_name": cluster["name"], "endpoints": []})
        out.append(cluster)
    return out


def _file_stem(prefix: str, name: str) -> str:
    """A file name for a resource name ("inbound|9080||" -> "rds-inbound_9080__-<hash>");
    a short hash keeps two names that clean up alike apart."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if clean != name:
        clean += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{prefix}-{clean}"


def path_source(config_dir: str, filename: str) -> dict:
    return {"resource_api_version": "V3", "path_config_source": {"path": os.path.join(config_dir, filename), "watched_directory": {"path": config_dir}}}


# Class texts a run keeps: a deploy renders into one directory per host role, so a few cover
# every class that is being rendered.
CLASS_TEXTS_KEPT = 32


class RenderCache:
    """What one run that renders many proxies writes once: the text of the objects proxies
    share (the values of their resources' fields) and, per config directory, those objects
    with their secret references pointed at files."""

    def __init__(self, limit: int = 1 << 18) -> None:
        self.text = TextCache(limit)
        self._memos: dict[tuple, dict] = {}
        self._class_texts: dict[tuple, object] = {}
        self._limit = limit

    def class_text(self, key: tuple, write):
        """The text of a class of proxies for one directory (deliver/class_template.py), written
        once; a few are kept (each is as big as a proxy's files)."""
        if key not in self._class_texts:
            if len(self._class_texts) >= CLASS_TEXTS_KEPT:
                self._class_texts.clear()
            self._class_texts[key] = write()
        return self._class_texts[key]

    def memo(self, *key) -> dict:
        """The run's memo for one walk of secret references (compile/secrets.py), by what it does."""
        memo = self._memos.setdefault(key, {})
        if len(memo) >= self._limit:  # the objects of many classes, or of proxies with folders of their own
            memo.clear()
        return memo


def serialize(document: dict, fmt: str, cache: RenderCache | None = None) -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, sort_keys=True) + "\n"
    resources = document.get("resources") if len(document) == 1 else None
    # One proxy's long list (no run cache to share text with other proxies): written in parts side by side.
    if cache is None and type(resources) is list and len(resources) >= PARALLEL_ITEMS_FROM:  # pylint: disable=unidiomatic-typecheck
        return _yaml_in_parts(resources, available_workers())
    return yaml_text(document, cache.text if cache else None)


# A proxy that sees 10,000 services has 30,000 clusters (100 MB of YAML): from this many
# resources on, a file is written in parts, in forked copies (meshwright/forked.py).
PARALLEL_ITEMS_FROM = 5_000


def _yaml_in_parts(resources: list[dict], workers: int) -> str:
    """yaml_text({"resources": resources}), each part of the list written on its own: a block
    sequence's items are written one after another, so the parts' items joined are the whole."""
    size = -(-len(resources) // max(1, workers))
    texts = forked_map(lambda part: yaml_text({"resources": part}), [resources[start:start + size] for start in range(0, len(resources), size)])
    return texts[0] + "".join(text.split("\n", 1)[1] for text in texts[1:])  # each part after the first without its "resources:" line


def certificates_dir(settings: MeshSettings, config_dir: str) -> str:
    """Where the proxy's certificates are on its host: the MeshConfig's certificates.dir,
    relative to the config directory unless absolute (inside the config directory's parent:
    mesh.certificates_dir_problem, checked before rendering)."""
    return os.path.normpath(os.path.join(config_dir, settings.certificates_dir))


def _secret_file(name: str, ext: str) -> str:
    return f"{_file_stem('sds', name.lower())}.{ext}"


def secret_files(settings: MeshSettings, config_dir: str, ext: str) -> dict[str, dict]:
    """sds-default and sds-rootca: the proxy's certificate and trust bundle, as files in its
    certs directory (none without workload identity)."""
    if not settings.identity_enabled:
        return {}
    secrets = workload_secrets(certificates_dir(settings, config_dir))
    return {_secret_file(secret["name"], ext): {"resources": [{"@type": SECRET, **secret}]} for secret in secrets}


def render_files(config: ProxyConfig, settings: MeshSettings, config_dir: str, fmt: str = "yaml", cache: RenderCache | None = None) -> dict[str, str]:
    """filename -> content of every file of the proxy. config_dir is where the files will live
    on the proxy's host (the paths the bootstrap and lds/cds point at). cache: the run's, when
    it renders many proxies."""
    return serialize_files(file_documents(config, settings, config_dir, fmt, cache), fmt, cache)


def serialize_files(documents: dict[str, dict], fmt: str, cache: RenderCache | None = None) -> dict[str, str]:
    return {name: serialize(document, fmt, cache) for name, document in sorted(documents.items())}


def file_documents(config: ProxyConfig, settings: MeshSettings, config_dir: str, fmt: str = "yaml", cache: RenderCache | None = None) -> dict[str, dict]:
    """filename -> document of every file of the proxy, before serialization (render_files)."""
    ext = "json" if fmt == "json" else "yaml"
    files: dict[str, dict] = {}
    listeners = copy.deepcopy(config.listeners)
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM_FILTER and "rds" in network_filter["typed_config"]:
                    rds = network_filter["typed_config"]["rds"]
                    rds["config_source"] = path_source(config_dir, f"{_file_stem('rds', rds['route_config_name'])}.{ext}")

    def sds_from_file(reference: dict) -> dict:
        return {**reference, "sds_config": path_source(config_dir, _secret_file(reference["name"], ext))}

    memo = cache.memo("sds from files", config_dir, ext) if cache else None
    listeners = with_secret_references(listeners, sds_from_file)
    clusters = with_secret_references(with_inline_endpoints(config.clusters, config.endpoints), sds_from_file, memo)
    files.update(secret_files(settings, config_dir, ext))
    for route in config.routes:
        files[f"{_file_stem('rds', route['name'])}.{ext}"] = {"resources": [{"@type": ROUTE_CONFIGURATION, **route}]}
    files[f"lds.{ext}"] = {"resources": [{"@type": LISTENER, **l} for l in listeners]}
    files[f"cds.{ext}"] = {"resources": [{"@type": CLUSTER, **c} for c in clusters]}
    name, bootstrap = bootstrap_file(config.proxy, config.telemetry, settings, config_dir, fmt, config.bootstrap_patches, config.stat_tags)
    files[name] = bootstrap
    return files


def bootstrap_file_name(fmt: str) -> str:
    return f"{BOOTSTRAP}.{'json' if fmt == 'json' else 'yaml'}"


def bootstrap_file(proxy, telemetry, settings: MeshSettings, config_dir: str, fmt: str = "yaml", patches: tuple[dict, ...] = (),
                   stat_tags: tuple[tuple[str, str], ...] = ()) -> tuple[str, dict]:
    """(file name, document) of the proxy's bootstrap, which points Envoy at its lds and cds
    files; patches: EnvoyFilter BOOTSTRAP values merged into it; stat_tags: the proxy's own
    metric labels (ProxyConfig.stat_tags)."""
    ext = "json" if fmt == "json" else "yaml"
    sources = {"lds": path_source(config_dir, f"lds.{ext}"), "cds": path_source(config_dir, f"cds.{ext}")}
    return bootstrap_file_name(fmt), compile_bootstrap(proxy, settings, telemetry, sources, patches, stat_tags)
