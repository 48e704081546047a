"""A class's proxies rendered from one text (what deploy does for every proxy of a mesh).

Proxies of a class (compile/proxy_class.py) have the same files but for their bootstrap: the
stat names of their clusters carry only what the class shares, and each proxy's own labels
are fixed tags of its bootstrap (compile/telemetry.py own_stat_tags). The class is written
once for the directory its files go to; a proxy's files are then its own bootstrap and that
text; its validation bootstrap, its own bootstrap with the class's static resources written
in. The text is the same as the proxy's rendered alone (tests/unit/test_render_many.py);
where a class cannot be written so (tagOverrides that put a proxy's own labels in its stat
names), each proxy is rendered alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from meshwright.compile.build import ProxyConfig, shared_config
from meshwright.compile.proxy import Proxy
from meshwright.compile.proxy_class import class_key
from meshwright.compile.telemetry import stat_names_per_proxy
from meshwright.deliver.files import RenderCache, bootstrap_file, file_documents, serialize, serialize_files
from meshwright.deliver.validation_bootstrap import static_resources, with_static_resources
from meshwright.mesh import Mesh

# Items standing in for the class's listeners and clusters in a proxy's validation bootstrap.
_LISTENERS_HERE, _CLUSTERS_HERE = "meshwright-class-listeners-here", "meshwright-class-clusters-here"


@dataclass(frozen=True)
class _ClassText:
    files: dict[str, str]  # every file but the bootstrap
    blocks: dict[str, str]  # marker -> the class's static listeners or clusters, as items of static_resources
    secrets: list[dict]  # the static secrets of the validation bootstrap


def class_files(mesh: Mesh, proxy: Proxy, config_dir: str, fmt: str, cache: RenderCache,
                alone: Callable[[Mesh, Proxy, dict, RenderCache], str]) -> tuple[dict[str, str], Callable[[], str]] | None:
    """(files, the validation bootstrap's writer) of the proxy, from its class's text; None
    when the proxy is to be rendered alone. alone(mesh, proxy, bootstrap, cache) writes a
    validation bootstrap without the class's text."""
    key = class_key(mesh, proxy)
    if key is None:
        return None
    text = cache.class_text(("class text", id(mesh), key, config_dir, fmt), lambda: _class_text(mesh, proxy, config_dir, fmt, cache))
    if text is None:
        return None
    shared = shared_config(mesh, proxy)
    name, bootstrap = bootstrap_file(proxy, shared.telemetry, mesh.settings, config_dir, fmt, stat_tags=shared.stat_tags)
    files = {**text.files, name: serialize(bootstrap, fmt, cache)}

    def validation() -> str:
        listeners = [_LISTENERS_HERE] if _LISTENERS_HERE in text.blocks else []
        clusters = [_CLUSTERS_HERE] if _CLUSTERS_HERE in text.blocks else []
        head = serialize(with_static_resources(bootstrap, listeners, clusters, text.secrets), "yaml", cache)
        # The proxy's own (small) text cut at each marker's line, then joined with the class's
        # blocks once: the blocks are as big as the class's files.
        lines = {f"  - {marker}\n": block for marker, block in text.blocks.items()}
        if any(head.count(line) != 1 for line in lines):  # the proxy's own bootstrap has a line like it: written alone
            return alone(mesh, proxy, bootstrap, cache)
        pieces, rest = [], head
        for line in sorted(lines, key=head.index):
            before, rest = rest.split(line)
            pieces += [before, lines[line]]
        return "".join(pieces + [rest])

    return dict(sorted(files.items())), validation


def _class_text(mesh: Mesh, proxy: Proxy, config_dir: str, fmt: str, cache: RenderCache) -> _ClassText | None:
    shared = shared_config(mesh, proxy)
    if stat_names_per_proxy(shared.telemetry):
        return None
    config = ProxyConfig(proxy, shared.listeners, shared.routes, shared.clusters, shared.endpoints, shared.telemetry)
    documents = file_documents(config, mesh.settings, config_dir, fmt, cache)
    documents.pop(bootstrap_file(proxy, shared.telemetry, mesh.settings, config_dir, fmt)[0])
    files = serialize_files(documents, fmt, cache)
    memos = (cache.memo("static secrets"), cache.memo("secret names"))
    listeners, static_clusters, secrets = static_resources(config, memos, mesh.settings.credentials_dir)
    blocks = {}
    for marker, kind, items in ((_LISTENERS_HERE, "listeners", listeners), (_CLUSTERS_HERE, "clusters", static_clusters)):
        if items:
            header = f"static_resources:\n  {kind}:\n"
            written = serialize({"static_resources": {kind: items}}, "yaml", cache)
            if not written.startswith(header) or marker in written:
                return None
            blocks[marker] = written[len(header):]
    return _ClassText(files, blocks, secrets)
