# Copied from module_utils/mesh_pki_metrics.py by tools/sync_collection.py: edit the source, then run it.
"""The certificate report as Prometheus metrics: a text file in the exposition format that a
node exporter's textfile collector (or any scraper of such files) reads.

Only absolute times are written (not_after, not_before, renew_after as Unix seconds), never
"seconds left": the same certificates give the same bytes on every run, so a report that finds
nothing new changes nothing, and the time left is `meshwright_cert_not_after_seconds - time()`
in PromQL, always current. `meshwright_cert_valid` changes only when a certificate expires,
is replaced or goes missing.

Standard library only (the host-side module ships this file as is); the input is
mesh_cert_info's result for each proxy.
"""

from __future__ import annotations

import datetime

# name -> help text; written in this order (sorted), each family once.
FAMILIES = {
    "meshwright_cert_envoy_in_use": "1 when the proxy's Envoy presents the installed workload certificate and trusts exactly "
                                    "the installed trust bundle (admin /certs), else 0.",
    "meshwright_cert_not_after_seconds": "When the certificate expires, in Unix seconds (time left: "
                                         "meshwright_cert_not_after_seconds - time()).",
    "meshwright_cert_not_before_seconds": "When the certificate became valid, in Unix seconds.",
    "meshwright_cert_renew_after_seconds": "When a workload certificate is due for renewal (two thirds of its life), in Unix seconds.",
    "meshwright_cert_trust_bundle_info": "The trust bundle a proxy holds (SHA-256 over its roots' fingerprints); always 1.",
    "meshwright_cert_valid": "1 when the certificate was within its validity period when the report ran; 0 when it had "
                             "expired, was not valid yet or was missing.",
}
# Label order in the output (Prometheus ignores it; people reading the file do not).
LABELS = ("proxy", "kind", "spiffe_id", "serial", "subject", "issuer", "fingerprint")
KINDS = ("workload", "intermediate", "root")  # sort order of the series of one proxy


def _escape(value: str) -> str:
    """A label value as the exposition format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict) -> str:
    # Empty values are left out: Prometheus treats an empty label as an absent one.
    pairs = [f'{name}="{_escape(str(labels[name]))}"' for name in LABELS if labels.get(name)]
    return "{" + ",".join(pairs) + "}"


def _sort_key(labels: dict) -> tuple:
    return tuple(KINDS.index(labels["kind"]) if name == "kind" and "kind" in labels else str(labels.get(name) or "") for name in LABELS)


def _seconds(iso: str) -> int:
    return int(datetime.datetime.fromisoformat(iso).timestamp())


def _certificate_samples(proxy: str, kind: str, certificate: dict, now: datetime.datetime) -> list[tuple[str, dict, int]]:
    labels = {"proxy": proxy, "kind": kind, "spiffe_id": certificate.get("spiffe_id", ""), "serial": certificate["serial"],
              "subject": certificate["subject"], "issuer": certificate["issuer"]}
    start, end = _seconds(certificate["not_before"]), _seconds(certificate["not_after"])
    samples = [
        ("meshwright_cert_not_after_seconds", labels, end),
        ("meshwright_cert_not_before_seconds", labels, start),
        ("meshwright_cert_valid", labels, int(start <= now.timestamp() < end)),
    ]
    if certificate.get("renew_after"):
        samples.append(("meshwright_cert_renew_after_seconds", labels, _seconds(certificate["renew_after"])))
    return samples


def proxy_samples(proxy: str, info: dict, now: datetime.datetime) -> list[tuple[str, dict, int]]:
    """(metric, labels, value) for one proxy's mesh_cert_info result."""
    certificate = info.get("certificate")
    if certificate is None:
        samples = [("meshwright_cert_valid", {"proxy": proxy, "kind": "workload"}, 0)]
    else:
        samples = _certificate_samples(proxy, "workload", certificate, now)
    for authority in info.get("authorities") or []:
        samples += _certificate_samples(proxy, authority["kind"], authority, now)
    if certificate and certificate.get("bundle_fingerprint"):
        samples.append(("meshwright_cert_trust_bundle_info", {"proxy": proxy, "fingerprint": certificate["bundle_fingerprint"]}, 1))
    if info.get("envoy") is not None:
        samples.append(("meshwright_cert_envoy_in_use", {"proxy": proxy}, int(bool(info["envoy"].get("in_use")))))
    return samples


def render_metrics(report: dict, now: datetime.datetime) -> str:
    """The exposition text for {proxy ID: mesh_cert_info result}: HELP and TYPE for each family
    that has samples, the samples sorted by labels, deterministic bytes. Entries without a
    `certificate` key (a skipped task: the proxy has no identity) are left out."""
    series: dict[str, dict[str, int]] = {name: {} for name in FAMILIES}
    order: dict[str, dict[str, tuple]] = {name: {} for name in FAMILIES}
    for proxy, info in sorted(report.items()):
        if not isinstance(info, dict) or "certificate" not in info:
            continue
        for name, labels, value in proxy_samples(proxy, info, now):
            text = _labels(labels)
            series[name][text] = value  # the same certificate twice in one bundle is one series
            order[name][text] = _sort_key(labels)
    lines = []
    for name in sorted(FAMILIES):
        if not series[name]:
            continue
        lines += [f"# HELP {name} {FAMILIES[name]}", f"# TYPE {name} gauge"]
        lines += [f"{name}{text} {series[name][text]}" for text in sorted(series[name], key=lambda t: (order[name][t], t))]
    return "\n".join(lines) + "\n" if lines else ""
