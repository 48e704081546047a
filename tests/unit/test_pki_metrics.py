"""The certificate report as Prometheus metrics (meshwright.pki.metrics): real certificates
from meshwright.pki, described as the host describes them, rendered, then read back with
Prometheus' own parser (prometheus_client) and checked by `promtool check metrics`."""

from __future__ import annotations

import datetime
import random
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshwright.pki import ca, csr, info, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.metrics import render_metrics

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
PAYMENT_ID = "spiffe://cluster.local/ns/default/sa/payment-service"
ORDER_ID = "spiffe://cluster.local/ns/default/sa/order-service"


def cert_info(chain: bytes | None, roots: bytes, in_use: bool | None = None) -> dict:
    """What mesh_cert_info returns for a proxy with these files (the parts metrics use)."""
    certificate = None
    if chain:
        certificate = info.describe(info.first_certificate(chain), NOW).as_dict()
        certificate["bundle_fingerprint"] = info.bundle_fingerprint(roots)
    result = {"certificate": certificate, "authorities": info.ca_certificates(chain, roots, NOW), "alerts": []}
    result["envoy"] = None if in_use is None else {"in_use": in_use}
    return result


def leaf(issuer, spiffe_id: str, signed: datetime.datetime) -> bytes:
    return workload.sign_csr(csr.make_csr(csr.make_private_key(), spiffe_id), spiffe_id, issuer, now=signed)


@pytest.fixture(scope="module")
def report():
    # A root that expires in 30 days (a warning on every run), its site intermediate, and:
    # payment-1 with a good certificate, order-1 with one that expired 10 days ago, and
    # order-2 with none at all. The gateway has no identity (a skipped task).
    root = ca.make_root("cluster.local", lifetime=30 * DAY, now=NOW)
    site = ca.make_intermediate(root, "local", now=NOW)
    roots = certificate_pem(root.certificate)
    payment, order = leaf(site, PAYMENT_ID, NOW - DAY), leaf(site, ORDER_ID, NOW - 40 * DAY)
    return root, payment, {
        "payment-1.default": cert_info(payment, roots, in_use=True),
        "order-1.default": cert_info(order, roots, in_use=False),
        "order-2.default": cert_info(None, roots),
        "ingress.default": {"skipped": True, "changed": False},
    }


def samples(text: str) -> dict:
    """metric name -> [(labels, value)], through Prometheus' parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(parsed: dict, name: str, **labels) -> float:
    found = [v for seen, v in parsed.get(name, []) if all(seen.get(k) == v2 for k, v2 in labels.items())]
    assert len(found) == 1, (name, labels, parsed.get(name))
    return found[0]


def test_metrics_give_expiry_validity_and_identity_per_proxy_and_certificate(report):
    root, payment_chain, proxies = report
    parsed = samples(render_metrics(proxies, NOW))
    root_end = info.not_after(root.certificate).timestamp()
    # The workload certificate: its labels say who it is; its times are the certificate's.
    payment = info.describe(info.first_certificate(payment_chain), NOW)
    labels = [seen for seen, _ in parsed["meshwright_cert_not_after_seconds"] if seen["proxy"] == "payment-1.default" and seen["kind"] == "workload"]
    assert labels == [{"proxy": "payment-1.default", "kind": "workload", "spiffe_id": PAYMENT_ID, "serial": payment.serial,
                       "issuer": "CN=local,O=cluster.local"}]  # its subject is empty, as Istio's: no label
    assert value(parsed, "meshwright_cert_not_after_seconds", proxy="payment-1.default", kind="workload") == payment.not_after.timestamp()
    assert value(parsed, "meshwright_cert_valid", proxy="payment-1.default", kind="workload") == 1
    assert value(parsed, "meshwright_cert_renew_after_seconds", proxy="payment-1.default") == int(payment.renew_after.timestamp())
    assert value(parsed, "meshwright_cert_envoy_in_use", proxy="payment-1.default") == 1
    # The expired one is there, with valid 0; Envoy does not use what is installed.
    assert value(parsed, "meshwright_cert_valid", proxy="order-1.default", kind="workload") == 0
    assert value(parsed, "meshwright_cert_not_after_seconds", proxy="order-1.default", kind="workload") < NOW.timestamp()
    assert value(parsed, "meshwright_cert_envoy_in_use", proxy="order-1.default") == 0
    # No certificate: valid 0 and nothing else for its workload; no series for a proxy without identity.
    assert value(parsed, "meshwright_cert_valid", proxy="order-2.default", kind="workload") == 0
    assert not [seen for seen, _ in parsed["meshwright_cert_not_after_seconds"] if seen["proxy"] == "order-2.default" and seen["kind"] == "workload"]
    assert not [seen for series in parsed.values() for seen, _ in series if seen.get("proxy") == "ingress.default"]
    # The intermediate and the root near expiry, for every proxy that holds them.
    for proxy in ("payment-1.default", "order-1.default"):
        assert value(parsed, "meshwright_cert_not_after_seconds", proxy=proxy, kind="root", serial=info.serial_hex(root.certificate)) == root_end
        assert value(parsed, "meshwright_cert_not_after_seconds", proxy=proxy, kind="intermediate") == root_end  # never outlives its root
        assert value(parsed, "meshwright_cert_valid", proxy=proxy, kind="root") == 1
    assert (root_end - NOW.timestamp()) / 86400 == pytest.approx(30, abs=0.01)
    # The root also sits in order-2's bundle; the bundle's fingerprint is a label of an info gauge.
    assert value(parsed, "meshwright_cert_not_after_seconds", proxy="order-2.default", kind="root") == root_end
    fingerprint = info.bundle_fingerprint(certificate_pem(root.certificate))
    assert value(parsed, "meshwright_cert_trust_bundle_info", proxy="payment-1.default") == 1
    assert [seen["fingerprint"] for seen, _ in parsed["meshwright_cert_trust_bundle_info"]] == [fingerprint, fingerprint]
    # Only absolute times: no series of time left.
    assert not any("expires_in" in name or "days" in name for name in parsed)


def test_metrics_are_the_same_bytes_whatever_the_order_and_sorted(report):
    _, _, proxies = report
    text = render_metrics(proxies, NOW)
    items = list(proxies.items())
    random.Random(4).shuffle(items)
    assert render_metrics(dict(items), NOW) == text
    # An hour later nothing expired or began: the same bytes (a re-run changes nothing).
    assert render_metrics(proxies, NOW + datetime.timedelta(hours=1)) == text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names == sorted(names) and len(names) == len(set(names))
    # Within a family: by proxy, then workload, intermediate, root.
    valid = [family for family in text_string_to_metric_families(text) if family.name == "meshwright_cert_valid"][0]
    order = [(sample.labels["proxy"], sample.labels["kind"]) for sample in valid.samples]
    assert order == [("order-1.default", "workload"), ("order-1.default", "intermediate"), ("order-1.default", "root"),
                     ("order-2.default", "workload"), ("order-2.default", "root"),
                     ("payment-1.default", "workload"), ("payment-1.default", "intermediate"), ("payment-1.default", "root")]


def test_label_values_are_escaped():
    text = render_metrics({'odd"name\\x.default': {"certificate": None}}, NOW)
    assert 'proxy="odd\\"name\\\\x.default"' in text
    assert samples(text)["meshwright_cert_valid"] == [({"proxy": 'odd"name\\x.default', "kind": "workload"}, 0.0)]


def test_nothing_to_report_is_an_empty_file():
    assert render_metrics({"ingress.default": {"skipped": True}}, NOW) == ""


def test_promtool_accepts_the_metrics(report):
    _, _, proxies = report
    assert shutil.which("promtool"), "promtool (Debian's prometheus package, which .ci/run installs) is needed"
    checked = subprocess.run(["promtool", "check", "metrics"], input=render_metrics(proxies, NOW), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked
