"""What `meshwright status` and `meshwright proxy-config` read from a running control plane
(istioctl proxy-status and proxy-config): one instance's report on its loopback status
endpoint, and the merged view of several instances (high availability: each proxy is
connected to one of them, and any of them may have signed its certificate).

An instance's report (GET /status): its name (the xDS address it listens on), the mesh
generation and the last rejected edit, the refused streams and CSRs, every proxy of the mesh
with its streams (per xDS type SYNCED / STALE / NACK and Envoy's error, the Envoy version from
the node's user_agent_build_version, the expiry of the client certificate it connected with),
and the expiry of the last certificate its CSR service signed per proxy.
GET /config?proxy=NAME: every resource this instance sends that proxy, by kind.
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from cryptography import x509

from meshwright.compile.proxy import ADMIN_PORT
from meshwright.serve.identity import proxy_id_of_node
from meshwright.serve.resources import KIND_OF_TYPE

KINDS = ("clusters", "listeners", "endpoints", "routes", "secrets")
# The columns of `meshwright status`, as istioctl names them (Envoy's xDS services).
SERVICE_OF_KIND = {"clusters": "CDS", "listeners": "LDS", "endpoints": "EDS", "routes": "RDS", "secrets": "SDS"}


def envoy_version(node) -> str:
    """The Envoy version a node reports (user_agent_build_version), "-" when it gives none."""
    if node.HasField("user_agent_build_version"):
        version = node.user_agent_build_version.version
        return f"{version.major_number}.{version.minor_number}.{version.patch}"
    return node.user_agent_version or "-"


def certificate_expiry(pem: bytes | None) -> str | None:
    """The notAfter of a PEM certificate (ISO 8601, UTC); None without one."""
    if not pem:
        return None
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.isoformat()


def node_info(node, peer_pem: bytes | None) -> dict:
    """What a stream's first request and its TLS handshake tell of the proxy."""
    return {"envoy_version": envoy_version(node), "client_certificate_expires": certificate_expiry(peer_pem)}


class StatusEndpoint:
    """One instance's reports: plane (serve/plane.py), its name, its CSR service (or None)."""

    def __init__(self, plane, instance: str, certificates=None, registries=()):
        self.plane, self.instance, self.certificates = plane, instance, certificates
        self.registries = registries

    def status(self) -> dict:
        report = self.plane.status()
        report["instance"] = self.instance
        for proxy in report["proxies"]:
            for stream in proxy["streams"]:
                stream["instance"] = self.instance
        signed = self.certificates.expiries() if self.certificates is not None else {}
        report["certificates"] = dict(sorted(signed.items()))
        # What each registry that reports on itself says (Marathon: where it follows, its last error).
        report["registries"] = [registry.status() for registry in self.registries if callable(getattr(registry, "status", None))]
        return report

    def proxy_config(self, name: str) -> dict | None:
        """What this instance sends the proxy (by kind, name -> resource), None when the mesh
        has no such proxy. Secrets name the certs directory of the proxy's stream, if connected."""
        proxy_id = proxy_id_of_node(name)
        estate = self.plane.estate
        proxy = estate.proxies.get(proxy_id)
        if proxy is None:
            return None
        streams = [s for s in self.plane.streams() if s.proxy_id == proxy_id]
        certs_dir = streams[-1].certs_dir if streams else None
        snapshot = self.plane.snapshot_for(estate, proxy_id, certs_dir)
        return {
            "proxy": proxy_id, "instance": self.instance, "connected": bool(streams), "admin_port": proxy.port(ADMIN_PORT),
            "resources": {KIND_OF_TYPE[type_url]: {name: served.content for name, served in sorted(resources.items())}
                          for type_url, resources in snapshot.items() if type_url in KIND_OF_TYPE},
            "versions": {KIND_OF_TYPE[type_url]: {name: served.version for name, served in sorted(resources.items())}
                         for type_url, resources in snapshot.items() if type_url in KIND_OF_TYPE},
        }

    def answer(self, path: str) -> tuple[int, dict]:
        """(HTTP status, JSON body) of a GET on the endpoint."""
        url = urllib.parse.urlsplit(path)
        if url.path.rstrip("/") in ("", "/status"):
            return 200, self.status()
        if url.path.rstrip("/") == "/config":
            names = urllib.parse.parse_qs(url.query).get("proxy", [])
            config = self.proxy_config(names[0]) if len(names) == 1 else None
            if config is None:
                return 404, {"error": f"no proxy {names[0] if names else '(give ?proxy=NAME)'} in the mesh this instance serves"}
            return 200, config
        return 404, {"error": "GET /status or /config?proxy=NAME"}


# The client side: `meshwright status` and `proxy-config` against one or more instances.


class Unreachable(Exception):
    """An instance that gave no answer; the message names it and says why."""


def fetch(server: tuple[str, int], path: str, timeout: float) -> dict:
    host, port = server
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error", error.reason)
        except ValueError:
            reason = error.reason
        raise Unreachable(f"{address}: {reason}") from None
    except (OSError, ValueError) as error:
        raise Unreachable(f"{address}: no status from meshwright serve there: {getattr(error, 'reason', error)}") from None


@dataclass
class MergedStatus:
    """The instances' reports as one: proxies with the streams of every instance."""

    reports: list[dict]
    unreachable: list[str]

    def proxies(self) -> dict[str, list[dict]]:
        merged: dict[str, list[dict]] = {}
        for report in self.reports:
            for proxy in report["proxies"]:
                merged.setdefault(proxy["proxy"], []).extend(proxy["streams"])
        return dict(sorted(merged.items()))

    def certificate_expiry(self, proxy: str, streams: list[dict]) -> str | None:
        """The latest of what any instance signed for the proxy and what it connected with."""
        known = [r.get("certificates", {}).get(proxy) for r in self.reports] + [s.get("client_certificate_expires") for s in streams]
        known = [expiry for expiry in known if expiry]
        return max(known) if known else None

    def as_json(self) -> dict:
        proxies = [{"proxy": name, "certificate_expires": self.certificate_expiry(name, streams), "streams": streams}
                   for name, streams in self.proxies().items()]
        return {"instances": self.reports, "unreachable": self.unreachable, "proxies": proxies}


def merged_status(servers: list[tuple[str, int]], timeout: float) -> MergedStatus:
    reports, unreachable = [], []
    for server in servers:
        try:
            reports.append(fetch(server, "/status", timeout))
        except Unreachable as error:
            unreachable.append(str(error))
    return MergedStatus(reports, unreachable)


def _expiry_cell(expiry: str | None, now: datetime.datetime) -> str:
    if not expiry:
        return "-"
    at = datetime.datetime.fromisoformat(expiry)
    left = int((at - now).total_seconds())
    if left <= 0:
        return f"{at:%Y-%m-%dT%H:%M:%SZ} (EXPIRED)"
    hours, rest = divmod(left, 3600)
    return f"{at:%Y-%m-%dT%H:%M:%SZ} ({hours}h{rest // 60:02d}m)" if hours else f"{at:%Y-%m-%dT%H:%M:%SZ} ({rest // 60}m{rest % 60:02d}s)"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def registry_lines(registries: list[dict]) -> list[str]:
    """One line per registry: where it follows from (or that it does not), and its last error."""
    lines = []
    for registry in registries:
        where = f"following {registry['connected_to']}" if registry.get("connected_to") else "NOT CONNECTED"
        counts = ", ".join(f"{registry[key]} {key}" for key in ("apps", "pods") if key in registry)
        lines.append(f"registry {registry.get('name')}: {where}" + (f" ({counts})" if counts else ""))
        if registry.get("last_error"):
            lines.append(f"  last error: {registry['last_error']}")
        lines += [f"  skipped: {problem}" for problem in registry.get("skipped", [])]
    return lines


def status_table(merged: MergedStatus, now: datetime.datetime | None = None) -> list[str]:
    """istioctl proxy-status's table: a row per proxy and stream, then each instance's state,
    NACK errors, rejected edits and refusals."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    kinds = KINDS
    rows = [("NAME", "INSTANCE", *(SERVICE_OF_KIND[k] for k in kinds), "CERTIFICATE EXPIRES", "ENVOY")]
    errors = []
    for name, streams in merged.proxies().items():
        expiry = _expiry_cell(merged.certificate_expiry(name, streams), now)
        if not streams:
            rows.append((name, "-", *("-" for dummy in kinds), expiry, "-"))
        for stream in streams:
            types = stream["types"]
            rows.append((name, stream["instance"], *(types[k]["state"] if k in types else "-" for k in kinds), expiry,
                         stream.get("envoy_version", "-")))
            errors += [f"{name} {SERVICE_OF_KIND.get(kind, kind)} NACK ({stream['instance']}): {t['error']}"
                       for kind, t in types.items() if t["state"] == "NACK"]
    lines = _columns(rows)
    for report in merged.reports:
        lines.append(f"instance {report['instance']}: mesh generation {report['generation']}")
        rejection = report.get("rejection")
        if rejection:
            lines.append(f"  last edit REJECTED ({len(rejection['problems'])} problems; proxies keep the last good config):")
            lines += [f"    {problem}" for problem in rejection["problems"]]
        lines += [f"  refused: {refusal}" for refusal in report.get("refusals", [])]
        lines += registry_lines(report.get("registries", []))
    lines += errors
    lines += [f"instance UNREACHABLE: {reason}" for reason in merged.unreachable]
    return lines
