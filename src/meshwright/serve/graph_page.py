"""The service graph page (Kiali's graph, small): an HTTP server that draws serve/graph.py's
graph from Prometheus on each load and refreshes itself. A Prometheus that cannot be asked
gives a red banner that says so and no graph, never an empty graph that reads as "no traffic".

    GET /            the page (HTML with the SVG; clicking a node lists its traffic in and out)
    GET /graph.json  the graph as JSON (503 with {"error": ...} when Prometheus cannot be asked)
"""

from __future__ import annotations

import html
import http.server
import json
import threading
from dataclasses import dataclass
from typing import Callable

from meshwright.serve.graph import DEFAULT_WINDOW, Graph, GraphError, build_graph, edge_label, to_svg

REFRESH_SECONDS = 10

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>meshwright: service graph</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.banner {{ background: #c0392b; color: white; padding: 0.8em; font-weight: bold; }}
.summary {{ color: #555; }}
g.node {{ cursor: pointer; }}
#details td, #details th {{ padding: 0 1em 0 0; text-align: left; }}
</style></head>
<body>
<h1>Service graph</h1>
{banner}
<p class="summary">{summary}</p>
{svg}
<div id="details"></div>
<script id="graph-data" type="application/json">{data}</script>
<script>
const graph = JSON.parse(document.getElementById("graph-data").textContent || "null");
function rows(edges, end) {{
  return edges.map(e => `<tr><td>${{e[end]}}</td><td>${{e.rate.toFixed(2)}} rps</td><td>${{(e.error_share * 100).toFixed(1)}}% 5xx</td>` +
    `<td>p99 ${{e.p99_ms === null ? "-" : e.p99_ms + " ms"}}</td><td>${{e.mtls ? "mTLS" : ""}}</td></tr>`).join("");
}}
document.querySelectorAll("g.node").forEach(node => node.addEventListener("click", () => {{
  const id = node.dataset.id;
  const into = graph.edges.filter(e => e.target === id), out = graph.edges.filter(e => e.source === id);
  document.getElementById("details").innerHTML = `<h2>${{id}}</h2><h3>Inbound</h3><table>${{rows(into, "source")}}</table>` +
    `<h3>Outbound</h3><table>${{rows(out, "target")}}</table>`;
}}));
</script>
</body></html>
"""


@dataclass
class GraphPage:
    prometheus: str
    window: str = DEFAULT_WINDOW
    timeout: float = 5.0
    # (namespace, workload) -> platform, from the control plane's live mesh (its registries' workloads)
    platforms: Callable[[], dict[tuple[str, str], str]] | None = None

    def graph(self) -> tuple[Graph | None, str]:
        """(the graph, "") or (None, why Prometheus could not be asked)."""
        try:
            return build_graph(self.prometheus, self.window, self.timeout, self.platforms() if self.platforms else None), ""
        except GraphError as error:
            return None, str(error)

    def html(self) -> tuple[int, str]:
        graph, problem = self.graph()
        if graph is None:
            banner = ('<div class="banner" id="banner">Prometheus cannot be asked, so there is no graph (this is not "no traffic"): '
                      f"{html.escape(problem)}</div>")
            return 503, PAGE.format(refresh=REFRESH_SECONDS, banner=banner, summary="", svg="", data="null")
        summary = (f"{len(graph.nodes)} nodes, {len(graph.edges)} edges with traffic in the last {html.escape(self.window)} "
                   f"(from {html.escape(self.prometheus)}); refreshes every {REFRESH_SECONDS} s")
        if not graph.edges:
            summary = f"No traffic in the last {html.escape(self.window)}: Prometheus answered, with no request between services."
        data = graph.to_json().replace("</", "<\\/")
        listing = "".join(f"<li>{html.escape(e.source)} &rarr; {html.escape(e.target)}: {html.escape(edge_label(e))}</li>" for e in graph.edges)
        return 200, PAGE.format(refresh=REFRESH_SECONDS, banner="", summary=summary, svg=to_svg(graph) + f"<ul>{listing}</ul>", data=data)

    def json(self) -> tuple[int, str]:
        graph, problem = self.graph()
        return (503, json.dumps({"error": problem}) + "\n") if graph is None else (200, graph.to_json())


def start(page: GraphPage, listen: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    """Serve the page on listen (HOST, PORT) in a thread; shutdown() stops it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/":
                status, body, kind = *page.html(), "text/html; charset=utf-8"
            elif path == "/graph.json":
                status, body, kind = *page.json(), "application/json"
            else:
                status, body, kind = 404, "not found\n", "text/plain"
            raw = body.encode()
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(raw)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(listen, Handler)
    threading.Thread(target=server.serve_forever, name="graph-page", daemon=True).start()
    return server
