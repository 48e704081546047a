"""`meshwright proxy-config NAME KIND`: what the control plane sends one proxy (istioctl
proxy-config), as a short table or whole, and how it differs from what the proxy's Envoy holds
(its admin config_dump).

Both sides are compared as the Envoy protos read them: each resource is parsed into its
message and written back as JSON (the same field names, defaults and typed_config shapes), so
only a difference of meaning shows, never one of spelling. Two things Envoy's dump writes
otherwise than it received are read back: the defaults it fills into endpoints, and the files
a secret names, which it dumps as their content (a key redacted): a file counts as the same
when Envoy holds what it holds now, and a difference is told in words (serials, expiries),
never in key bytes.
"""

from __future__ import annotations

import base64
import difflib
import json
import urllib.request

from cryptography import x509
from google.protobuf import json_format

from meshwright.check.envoy_proto import message_class
from meshwright.compile.secrets import FILE_SECRETS
from meshwright.serve.resources import TYPE_OF_KIND, register_types

# Where config_dump keeps each kind: the dump's section and the resource inside an entry.
DUMP_SECTIONS = {
    "clusters": ("dynamic_active_clusters", ("cluster",)),
    "listeners": ("dynamic_listeners", ("active_state", "listener")),
    "routes": ("dynamic_route_configs", ("route_config",)),
    "endpoints": ("dynamic_endpoint_configs", ("endpoint_config",)),
    "secrets": ("dynamic_active_secrets", ("secret",)),
}


def resource_name(kind: str, resource: dict) -> str:
    return resource.get("cluster_name", "") if kind == "endpoints" else resource.get("name", "")


def normalized(kind: str, resource: dict) -> dict:
    """The resource as its Envoy proto writes it (ValueError when it does not parse)."""
    register_types(resource)
    message = json_format.ParseDict(resource, message_class(TYPE_OF_KIND[kind].split("/", 1)[1])(), ignore_unknown_fields=True)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# What Envoy's dump of endpoints adds (it writes them from its host sets, not as received):
# when the control plane did not send the field, these values are Envoy's defaults, not a difference.
ENDPOINT_DEFAULTS = {"health_check_config": {}, "health_status": "HEALTHY", "locality": {}, "load_balancing_weight": 0,
                     "policy": {"overprovisioning_factor": 140}}


def without_defaults(held, sent, defaults: dict):
    """held without the fields that sent lacks and that hold only Envoy's default (recursively)."""
    if isinstance(held, dict) and isinstance(sent, dict):
        return {key: without_defaults(value, sent.get(key), defaults) for key, value in held.items()
                if key in sent or key not in defaults or defaults[key] != value}
    if isinstance(held, list) and isinstance(sent, list) and len(held) == len(sent):
        return [without_defaults(h, s, defaults) for h, s in zip(held, sent)]
    return held


REDACTED = base64.b64encode(b"[redacted]").decode()


def pem_summary(data: bytes) -> str:
    """What a PEM file holds, in words: its certificates' serials and expiries (never key bytes)."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"{len(data)} bytes, no PEM certificate"
    return "; ".join(f"certificate serial {c.serial_number:x}, expires {c.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}" for c in certificates)


def with_files_read(held, sent):
    """held, where Envoy dumps a file's content inline (secrets: it loaded the file the control
    plane named) and sent names the file: the file's reference when Envoy holds what the file
    holds now (or a key Envoy redacts), else what each holds, in words."""
    if isinstance(held, dict) and isinstance(sent, dict):
        if "inline_bytes" in held and "filename" in sent:
            if held["inline_bytes"] == REDACTED:
                return sent
            loaded = base64.b64decode(held["inline_bytes"])
            try:
                with open(sent["filename"], "rb") as handle:
                    on_disk = handle.read()
            except OSError as error:
                return {"loaded": pem_summary(loaded), "file": f"{sent['filename']}: cannot read it here: {error.strerror or error}"}
            return sent if on_disk == loaded else {"loaded": pem_summary(loaded), "file": f"{sent['filename']}: {pem_summary(on_disk)}"}
        return {key: with_files_read(value, sent.get(key)) for key, value in held.items()}
    return held


# Dynamic resources Envoy holds that the control plane does not send: the secrets its bootstrap
# reads from files (the xds-grpc cluster's, compile/secrets.py).
NOT_SENT = {"secrets": frozenset(FILE_SECRETS.values())}


def envoy_resources(dump: dict, kind: str) -> dict[str, dict]:
    """The dynamic resources of a kind in an Envoy config_dump that the control plane sends, by name."""
    section, path = DUMP_SECTIONS[kind]
    found = {}
    for config in dump.get("configs", []):
        for entry in config.get(section, []):
            for key in path:
                entry = entry.get(key, {}) if isinstance(entry, dict) else {}
            if entry and resource_name(kind, entry) not in NOT_SENT.get(kind, ()):
                found[resource_name(kind, entry)] = entry
    return found


def config_dump(admin: tuple[str, int], timeout: float) -> dict:
    """Envoy's config_dump, endpoints included (OSError, ValueError when there is none)."""
    host, port = admin
    with urllib.request.urlopen(f"http://{host}:{port}/config_dump?include_eds", timeout=timeout) as response:
        return json.loads(response.read())


def _text(resource: dict) -> list[str]:
    return json.dumps(resource, indent=2, sort_keys=True).splitlines(keepends=False)


def config_diff(kind: str, sent: dict[str, dict], held: dict[str, dict], envoy_label: str) -> tuple[list[str], bool]:
    """The lines that show how what the control plane sends (sent) and what Envoy holds (held)
    differ, and whether they do."""
    only_sent = sorted(set(sent) - set(held))
    only_held = sorted(set(held) - set(sent))
    lines, same = [], 0
    for name in sorted(set(sent) & set(held)):
        ours, theirs = normalized(kind, sent[name]), normalized(kind, held[name])
        if kind == "endpoints":
            theirs = without_defaults(theirs, ours, ENDPOINT_DEFAULTS)
        elif kind == "secrets":
            theirs = with_files_read(theirs, ours)
        if ours == theirs:
            same += 1
            continue
        lines += difflib.unified_diff(_text(ours), _text(theirs), f"control plane: {kind} {name}", f"{envoy_label}: {kind} {name}", lineterm="")
    lines += [f"only sent by the control plane (Envoy does not hold it): {kind} {name}" for name in only_sent]
    lines += [f"only in Envoy (the control plane does not send it): {kind} {name}" for name in only_held]
    differ = len(sent.keys() & held.keys()) - same
    summary = f"{kind}: {same} the same, {differ} differ, {len(only_sent)} only sent by the control plane, {len(only_held)} only in Envoy"
    return [summary, *lines], bool(differ or only_sent or only_held)


# The short tables: a row per resource.


def _cluster_row(cluster: dict) -> tuple[str, ...]:
    tls = "TLS" if cluster.get("transport_socket", {}).get("name") == "envoy.transport_sockets.tls" else "-"
    if cluster.get("transport_socket_matches"):
        tls = "mTLS (matched)"
    return (cluster.get("type", "EDS" if "eds_cluster_config" in cluster else "-"), tls)


def _listener_row(listener: dict) -> tuple[str, ...]:
    address = listener.get("address", {}).get("socket_address", {})
    return (f"{address.get('address', '-')}:{address.get('port_value', '-')}", str(len(listener.get("filter_chains", []))))


def _route_row(route: dict) -> tuple[str, ...]:
    hosts = route.get("virtual_hosts", [])
    domains = [domain for host in hosts for domain in host.get("domains", [])]
    shown = ", ".join(domains[:3]) + (f" (+{len(domains) - 3})" if len(domains) > 3 else "")
    return (str(len(hosts)), str(sum(len(host.get("routes", [])) for host in hosts)), shown or "-")


def _endpoint_row(assignment: dict) -> tuple[str, ...]:
    addresses = [lb["endpoint"]["address"]["socket_address"] for group in assignment.get("endpoints", [])
                 for lb in group.get("lb_endpoints", []) if "socket_address" in lb.get("endpoint", {}).get("address", {})]
    shown = ", ".join(f"{a.get('address')}:{a.get('port_value')}" for a in addresses[:4]) + (f" (+{len(addresses) - 4})" if len(addresses) > 4 else "")
    return (str(len(addresses)), shown or "-")


def _secret_row(secret: dict) -> tuple[str, ...]:
    kind = next((key for key in ("tls_certificate", "validation_context", "generic_secret", "session_ticket_keys") if key in secret), "-")
    files = [value["filename"] for value in secret.get(kind, {}).values() if isinstance(value, dict) and "filename" in value]
    return (kind, ", ".join(files) or "-")


SUMMARIES = {
    "clusters": (("TYPE", "TLS"), _cluster_row),
    "listeners": (("ADDRESS", "FILTER CHAINS"), _listener_row),
    "routes": (("VIRTUAL HOSTS", "ROUTES", "DOMAINS"), _route_row),
    "endpoints": (("ENDPOINTS", "ADDRESSES"), _endpoint_row),
    "secrets": (("KIND", "FILES"), _secret_row),
}


def summary_table(kind: str, resources: dict[str, dict], versions: dict[str, str]) -> list[str]:
    headers, row_of = SUMMARIES[kind]
    rows = [("NAME", *headers, "VERSION")]
    rows += [(name, *row_of(resource), versions.get(name, "-")[:12]) for name, resource in sorted(resources.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
