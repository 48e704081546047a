"""A class's proxies rendered from one text (what deploy does for every proxy of a mesh).

Proxies of a class (compile/proxy_class.py) have the same files but for their bootstrap and
the stat names of their clusters, which carry each proxy's own labels. The class is written
once for the directory its files go to, with a token where those labels go
(compile/telemetry.py stat_name_template), and each text is cut at its tokens. A proxy's
files are then its own bootstrap and those pieces joined with its labels; its validation
bootstrap, its own bootstrap with the class's static resources written in. The text is the
same as the proxy's rendered alone (tests/unit/test_render_many.py); where a class or a
proxy cannot be written so (tagOverrides that rewrite a proxy's own labels, labels that are
not plain text, a token in the config itself), it is rendered alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from meshwright.compile.build import ProxyConfig, shared_config
from meshwright.compile.proxy import Proxy
from meshwright.compile.proxy_class import class_key
from meshwright.compile.telemetry import TOKEN_PREFIX, TOKEN_SUFFIX, stat_name_template, stat_name_values
from meshwright.deliver.files import RenderCache, bootstrap_file, file_documents, serialize, serialize_files
from meshwright.deliver.validation_bootstrap import static_resources, with_static_resources
from meshwright.mesh import Mesh

_TOKENS = re.compile("(%s[a-z0-9-]+%s)" % (re.escape(TOKEN_PREFIX), re.escape(TOKEN_SUFFIX)))
# Items standing in for the class's listeners and clusters in a proxy's validation bootstrap.
_LISTENERS_HERE, _CLUSTERS_HERE = "meshwright-class-listeners-here", "meshwright-class-clusters-here"


@dataclass(frozen=True)
class _Pieces:
    """A text cut at its tokens: text, token, text, ..., text."""

    parts: list[str]

    def joined(self, values: dict[str, str]) -> str:
        parts = self.parts
        return "".join([values[part] if index % 2 else part for index, part in enumerate(parts)]) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class _ClassText:
    tokens: list[str]
    files: dict[str, _Pieces]  # every file but the bootstrap
    blocks: dict[str, _Pieces]  # marker -> the class's static listeners or clusters, as items of static_resources
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
    telemetry = shared_config(mesh, proxy).telemetry
    values = stat_name_values(mesh, proxy, telemetry, text.tokens)
    if values is None:
        return None
    name, bootstrap = bootstrap_file(proxy, telemetry, mesh.settings, config_dir, fmt)
    files = {file: pieces.joined(values) for file, pieces in text.files.items()}
    files[name] = serialize(bootstrap, fmt, cache)

    def validation() -> str:
        listeners = [_LISTENERS_HERE] if _LISTENERS_HERE in text.blocks else []
        clusters = [_CLUSTERS_HERE] if _CLUSTERS_HERE in text.blocks else []
        head = serialize(with_static_resources(bootstrap, listeners, clusters, text.secrets), "yaml", cache)
        for marker, block in text.blocks.items():
            cut = head.split(f"  - {marker}\n")
            if len(cut) != 2:  # the proxy's own bootstrap has a line like it: written alone
                return alone(mesh, proxy, bootstrap, cache)
            head = cut[0] + block.joined(values) + cut[1]
        return head

    return dict(sorted(files.items())), validation


def _class_text(mesh: Mesh, proxy: Proxy, config_dir: str, fmt: str, cache: RenderCache) -> _ClassText | None:
    shared = shared_config(mesh, proxy)
    template = stat_name_template(mesh, proxy, shared.telemetry, shared.clusters)
    if template is None:
        return None
    clusters, tokens = template
    config = ProxyConfig(proxy, shared.listeners, shared.routes, clusters, shared.endpoints, shared.telemetry)
    documents = file_documents(config, mesh.settings, config_dir, fmt, cache)
    documents.pop(bootstrap_file(proxy, shared.telemetry, mesh.settings, config_dir, fmt)[0])
    # Each token once per cluster that has it: any other is config text that looks like one.
    expected = sum(len(_TOKENS.findall(cluster.get("alt_stat_name", ""))) for cluster in clusters)
    files = {name: _pieces(text) for name, text in serialize_files(documents, fmt, cache).items()}
    if sum(len(pieces.parts) // 2 for pieces in files.values()) != expected:
        return None
    memos = (cache.memo("static secrets"), cache.memo("secret names"))
    listeners, static_clusters, secrets = static_resources(config, memos, mesh.settings.credentials_dir)
    blocks = {}
    for marker, kind, items in ((_LISTENERS_HERE, "listeners", listeners), (_CLUSTERS_HERE, "clusters", static_clusters)):
        if items:
            header = f"static_resources:\n  {kind}:\n"
            written = serialize({"static_resources": {kind: items}}, "yaml", cache)
            if not written.startswith(header) or marker in written:
                return None
            blocks[marker] = _pieces(written[len(header):])
    if sum(len(pieces.parts) // 2 for pieces in blocks.values()) != expected:
        return None
    return _ClassText(tokens, files, blocks, secrets)


def _pieces(text: str) -> _Pieces:
    return _Pieces(_TOKENS.split(text))
