"""The service graph (what Kiali draws), from Istio's metrics in Prometheus.

Nodes are workloads (the proxies that report, marked gateway or by the platform they run on:
VM, Kubernetes, Marathon, from the mesh's registries) and services; edges
are workload -> service (the caller's proxy reports them: reporter="source") and service ->
workload (the server's proxy: reporter="destination"), each with its request rate, error
share (5xx), p99 latency and whether its calls were mutual TLS. Nothing is invented: an edge
exists when Prometheus has a rate for it, and a Prometheus that cannot be asked is an error
(GraphError), never an empty graph.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from xml.sax.saxutils import escape

DEFAULT_WINDOW = "1m"
DEFAULT_TIMEOUT = 10.0


class GraphError(Exception):
    """Prometheus could not be asked, or answered something that is not a query result."""


@dataclass(frozen=True)
class Node:
    id: str  # "workload:<namespace>/<name>" or "service:<host>"
    type: str  # workload or service
    name: str
    namespace: str
    kind: str = ""  # a workload's proxy: sidecar or gateway
    platform: str = ""  # where a workload runs: vm, kubernetes or marathon ("" when not known)

    @property
    def mark(self) -> str:
        """What the drawing says the node is: service, gateway, or the workload's platform."""
        if self.type == "service":
            return "service"
        return "gateway" if self.kind == "gateway" else PLATFORM_NAMES.get(self.platform, "sidecar")


PLATFORM_NAMES = {"vm": "VM", "kubernetes": "Kubernetes", "marathon": "Marathon"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    rate: float  # requests a second
    error_share: float  # 5xx / all, 0..1
    p99_ms: float | None  # None: no duration samples in the window
    mtls: bool | None  # None: the reporter cannot tell (a caller's side)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_json(self) -> str:
        return json.dumps({"nodes": [asdict(n) for n in self.nodes], "edges": [asdict(e) for e in self.edges]}, indent=2, sort_keys=True) + "\n"


def query(prometheus: str, promql: str, timeout: float = DEFAULT_TIMEOUT) -> list[tuple[dict, float]]:
    """An instant query: [(labels, value)]; GraphError naming the URL when it cannot be had."""
    url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        raise GraphError(f"Prometheus at {prometheus} refused the query: HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise GraphError(f"cannot reach Prometheus at {prometheus}: {reason}") from None
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
        raise GraphError(f"Prometheus at {prometheus} gave no query result: {body.get('error', body)}")
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def _workload(labels: dict, side: str) -> Node:
    name, namespace = labels.get(f"{side}_workload", "unknown"), labels.get(f"{side}_workload_namespace", "unknown")
    return Node(f"workload:{namespace}/{name}", "workload", name, namespace, labels.get("mesh_proxy_kind", ""), labels.get("mesh_platform", ""))


def _service(host: str) -> Node:
    parts = host.split(".")
    return Node(f"service:{host}", "service", host, parts[1] if len(parts) > 2 and parts[2] == "svc" else "")


def build_graph(prometheus: str, window: str = DEFAULT_WINDOW, timeout: float = DEFAULT_TIMEOUT,
                platforms: dict[tuple[str, str], str] | None = None) -> Graph:
    """The graph of the last `window` of traffic. platforms: (namespace, workload) -> vm,
    kubernetes or marathon from the live mesh (the control plane's, whose registries know
    workloads the scrape targets may not), over what the series' mesh_platform says."""
    calls = {"source": ("source_workload", "source_workload_namespace", "destination_service"),
             "destination": ("destination_service", "destination_workload", "destination_workload_namespace")}
    nodes: dict[str, Node] = {}
    edges = []
    for reporter, keys in calls.items():
        by = ", ".join((*keys, "mesh_proxy_kind", "mesh_platform"))
        rates = query(prometheus, f'sum(rate(istio_requests_total{{reporter="{reporter}"}}[{window}])) by ({by}, response_code)', timeout)
        buckets = f'rate(istio_request_duration_milliseconds_bucket{{reporter="{reporter}"}}[{window}])'
        p99s = query(prometheus, f"histogram_quantile(0.99, sum({buckets}) by (le, {by}))", timeout)
        mtls = query(prometheus, f'sum(rate(istio_requests_total{{reporter="{reporter}"}}[{window}])) by ({by}, connection_security_policy)', timeout)
        edges += _edges(reporter, keys, rates, p99s, mtls, nodes)
    for node_id, node in nodes.items():
        known = (platforms or {}).get((node.namespace, node.name)) if node.type == "workload" else None
        if known:
            nodes[node_id] = dataclasses.replace(node, platform=known)
    return Graph(tuple(sorted(nodes.values(), key=lambda n: n.id)), tuple(sorted(edges, key=lambda e: (e.source, e.target))))


def _edges(reporter: str, keys: tuple[str, ...], rates, p99s, mtls, nodes: dict[str, Node]) -> list[Edge]:
    totals: dict[tuple, list[float]] = {}
    ends: dict[tuple, tuple[Node, Node]] = {}
    for labels, value in rates:
        key = tuple(labels.get(k, "") for k in keys)
        if reporter == "source":
            ends[key] = (_workload(labels, "source"), _service(labels.get("destination_service", "unknown")))
        else:
            ends[key] = (_service(labels.get("destination_service", "unknown")), _workload(labels, "destination"))
        total = totals.setdefault(key, [0.0, 0.0])
        total[0] += value
        total[1] += value if labels.get("response_code", "").startswith("5") else 0.0
    p99 = {tuple(labels.get(k, "") for k in keys): value for labels, value in p99s}
    secure: dict[tuple, set[str]] = {}
    for labels, value in mtls:
        if value > 0:
            secure.setdefault(tuple(labels.get(k, "") for k in keys), set()).add(labels.get("connection_security_policy", "unknown"))
    out = []
    for key, (rate, errors) in totals.items():
        if rate <= 0:
            continue  # no request in the window: no edge
        source, target = ends[key]
        nodes.setdefault(source.id, source)
        nodes.setdefault(target.id, target)
        policies = secure.get(key, set())
        latency = p99.get(key)
        out.append(Edge(source.id, target.id, round(rate, 3), round(errors / rate, 4),
                        None if latency is None or math.isnan(latency) else round(latency, 2),
                        None if not policies or "unknown" in policies else policies == {"mutual_tls"}))
    return out


def edge_label(edge: Edge) -> str:
    p99 = "-" if edge.p99_ms is None else f"{edge.p99_ms:g} ms"
    lock = " mTLS" if edge.mtls else ""
    return f"{edge.rate:.2f} rps, {edge.error_share * 100:.1f}% 5xx, p99 {p99}{lock}"


def to_dot(graph: Graph) -> str:
    lines = ["digraph mesh {", "  rankdir=LR;"]
    for namespace in sorted({n.namespace for n in graph.nodes}):
        lines.append(f'  subgraph "cluster_{namespace}" {{ label="{namespace or "(no namespace)"}";')
        for node in (n for n in graph.nodes if n.namespace == namespace):
            shape = "triangle" if node.type == "service" else ("house" if node.kind == "gateway" else "box")
            lines.append(f'    "{node.id}" [label="{node.name}\\n{node.mark}", shape={shape}];')
        lines.append("  }")
    for edge in graph.edges:
        colour = "red" if edge.error_share > 0.2 else ("orange" if edge.error_share > 0 else "darkgreen")
        lines.append(f'  "{edge.source}" -> "{edge.target}" [label="{edge_label(edge)}", color={colour}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _ranks(graph: Graph) -> dict[str, int]:
    """Columns, left to right: a node one further than the furthest node that calls it."""
    rank = {n.id: 0 for n in graph.nodes}
    for dummy in range(len(graph.nodes)):
        changed = False
        for edge in graph.edges:
            if rank[edge.target] < rank[edge.source] + 1 <= len(graph.nodes):
                rank[edge.target] = rank[edge.source] + 1
                changed = True
        if not changed:
            break
    return rank


COLUMN, ROW, HALF_WIDTH = 470, 120, 110  # px: a column's width, a row's height, half a node's width


def _short(node: Node) -> str:
    """A node's name on the drawing: a service by its first DNS label (the host is its tooltip)."""
    return node.name.split(".")[0] if node.type == "service" else node.name


def _edge_path(start: tuple[int, int], end: tuple[int, int]) -> tuple[str, float, float]:
    """An edge from the right of one node to the left of another: straight to the next column,
    bowed below the row when it passes over columns between (so it crosses no node). Returns
    the path and where its label goes."""
    (x1, y1), (x2, y2) = start, end
    x1, x2 = x1 + HALF_WIDTH, x2 - HALF_WIDTH
    span = abs(x2 - x1) // COLUMN
    bow = 0 if span == 0 else 55 * span + 20
    control_y = (y1 + y2) / 2 + bow
    label_y = (y1 + y2) / 2 - 8 if bow == 0 else control_y - bow / 2 + 4
    return f"M {x1} {y1} Q {(x1 + x2) / 2} {control_y} {x2} {y2}", (x1 + x2) / 2, label_y


def to_svg(graph: Graph) -> str:
    """The graph as SVG: columns by call depth, nodes by namespace and name within a column."""
    rank = _ranks(graph)
    columns: dict[int, list[Node]] = {}
    for node in sorted(graph.nodes, key=lambda n: (n.namespace, n.name)):
        columns.setdefault(rank[node.id], []).append(node)
    where = {node.id: (20 + HALF_WIDTH + COLUMN * col, 50 + ROW * row) for col, nodes in columns.items() for row, node in enumerate(nodes)}
    width = COLUMN * max(columns, default=0) + 2 * HALF_WIDTH + 40
    height = ROW * max((len(n) for n in columns.values()), default=1) + 60 * max(columns, default=0) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<defs><marker id="arrow" markerWidth="10" markerHeight="7" refX="10" refY="3.5" orient="auto">'
             '<polygon points="0 0, 10 3.5, 0 7" fill="#555"/></marker></defs>']
    for edge in graph.edges:
        path, label_x, label_y = _edge_path(where[edge.source], where[edge.target])
        colour = "#c0392b" if edge.error_share > 0.2 else ("#e67e22" if edge.error_share > 0 else "#27ae60")
        parts.append(f'<g class="edge" data-source="{escape(edge.source)}" data-target="{escape(edge.target)}" data-rate="{edge.rate}">'
                     f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2" marker-end="url(#arrow)"/>'
                     f'<text x="{label_x}" y="{label_y}" text-anchor="middle">{escape(edge_label(edge))}</text></g>')
    for node in graph.nodes:
        x, y = where[node.id]
        mark = node.mark
        fill = "#eaf2f8" if node.type == "service" else "#fdfefe"
        parts.append(f'<g class="node" data-id="{escape(node.id)}" data-mark="{escape(mark)}"><title>{escape(node.name)}</title>'
                     f'<rect x="{x - HALF_WIDTH}" y="{y - 22}" width="{2 * HALF_WIDTH}" height="44" rx="{22 if node.type == "service" else 4}" '
                     f'fill="{fill}" stroke="#2c3e50"/><text x="{x}" y="{y - 3}" text-anchor="middle" font-weight="bold">{escape(_short(node))}</text>'
                     f'<text x="{x}" y="{y + 13}" text-anchor="middle" fill="#555">{escape(node.namespace)} · {mark}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


FORMATS = {"json": Graph.to_json, "dot": to_dot, "svg": to_svg}
