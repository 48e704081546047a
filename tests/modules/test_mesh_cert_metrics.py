"""The certificate report as Prometheus metrics: mesh_cert_info reads real certificates (a root
that expires in 30 days, a good workload certificate, an expired one, a proxy with none),
mesh_cert_metrics writes them as a node exporter textfile (check mode, apply, a re-run that
changes nothing), and cert_report.yml does both for an inventory."""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from meshwright.pki import ca as pki_ca
from meshwright.pki import workload
from meshwright.pki.ca import certificate_pem, private_key_pem
from meshwright.pki.ca_folder import CaFolder
from tests.modules.conftest import ROOT, run_module

SEED = os.path.join(ROOT, "examples", "seed", "mesh")
PAYMENT_ID = "spiffe://cluster.local/ns/default/sa/payment-service"
ORDER_ID = "spiffe://cluster.local/ns/default/sa/order-service"
NOW = datetime.datetime.now(datetime.timezone.utc)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def parse(text: str) -> dict:
    """(metric, proxy, kind) -> value, through Prometheus' parser."""
    return {(sample.name, sample.labels["proxy"], sample.labels.get("kind")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def cert_info(certs: str, **options) -> dict:
    """mesh_cert_info's result as a play registers it (its warnings are shown, not kept)."""
    result = run_module("mesh_cert_info", certs_dir=certs, **options)
    return {key: value for key, value in result.items() if key not in ("warnings", "deprecations")}


def make_ca(path: str, tmp_path) -> dict:
    """A mesh CA whose root expires in 30 days, imported as a company's root would be."""
    root = pki_ca.make_root("cluster.local", lifetime=datetime.timedelta(days=30))
    site = pki_ca.make_intermediate(root, "local")
    files = {}
    for name, authority in (("root", root), ("local", site)):
        files[name] = {"certificate": str(tmp_path / f"{name}-cert.pem"), "private_key": str(tmp_path / f"{name}-key.pem")}
        open(files[name]["certificate"], "wb").write(certificate_pem(authority.certificate))
        open(files[name]["private_key"], "wb").write(private_key_pem(authority.key))
    result = run_module("mesh_ca", path=path, intermediates=["local"], **{"import": {"root": files["root"], "intermediates": {"local": files["local"]}}})
    assert result["changed"] and not result.get("failed"), result
    return result


def install(ca: str, certs: str, proxy: str, spiffe_id: str, signed_days_ago: int = 0) -> str:
    """A key and CSR made as on the host, signed (signed_days_ago days ago, for 30 days), installed; its serial."""
    made = run_module("mesh_workload_csr", certs_dir=certs, spiffe_id=spiffe_id)
    if signed_days_ago:
        chain = workload.sign_csr(made["csr"].encode(), spiffe_id, CaFolder(ca).intermediate("local"),
                                  now=NOW - datetime.timedelta(days=signed_days_ago)).decode()
        bundle = CaFolder(ca).bundle().decode()
    else:
        signed = run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={proxy: made["csr"]}, intermediate="local")
        chain, bundle = signed["chains"][proxy]["chain"], signed["bundle"]
    assert run_module("mesh_workload_cert", certs_dir=certs, chain=chain, bundle=bundle)["changed"]
    return run_module("mesh_cert_info", certs_dir=certs)["certificate"]["serial"]


def test_cert_info_and_metrics_report_workloads_intermediates_and_a_root_near_expiry(tmp_path):
    ca = str(tmp_path / "ca")
    state = make_ca(ca, tmp_path)
    good = install(ca, str(tmp_path / "payment-1"), "payment-1.default", PAYMENT_ID)
    expired = install(ca, str(tmp_path / "order-1"), "order-1.default", ORDER_ID, signed_days_ago=40)
    infos = {proxy: cert_info(str(tmp_path / proxy.split(".")[0]))
             for proxy in ("payment-1.default", "order-1.default", "order-2.default")}

    # The root that expires in 30 days is an alert for every proxy that holds it, with the default 90 days.
    payment = infos["payment-1.default"]
    assert [a["kind"] for a in payment["authorities"]] == ["intermediate", "root"]
    assert payment["authorities"][1]["serial"] == state["root"]["serial"] and 29.9 < payment["authorities"][1]["days_left"] <= 30
    root_alert = f"root CA CN=meshwright root CA,O=cluster.local ({state['root']['serial']}) expires in"
    for proxy in ("payment-1.default", "order-1.default"):
        assert any(alert.startswith(root_alert) for alert in infos[proxy]["alerts"]), infos[proxy]["alerts"]
    assert not any("root CA" in alert for alert in run_module("mesh_cert_info", certs_dir=str(tmp_path / "payment-1"), ca_warn_days=29)["alerts"])
    assert infos["order-1.default"]["certificate"]["days_left"] < -9

    path = str(tmp_path / "textfile" / "meshwright-certs.prom")
    checked = run_module("mesh_cert_metrics", check=True, diff=True, path=path, proxies=infos)
    assert checked["changed"] and not os.path.exists(path) and "meshwright_cert_valid" in checked["diff"]["after"]
    applied = run_module("mesh_cert_metrics", path=path, proxies=infos)
    assert applied["changed"] and not applied.get("failed"), applied
    assert mode(path) == 0o644 and os.listdir(tmp_path / "textfile") == ["meshwright-certs.prom"]
    text = open(path).read()
    values = parse(text)
    root_end = datetime.datetime.fromisoformat(state["root"]["not_after"]).timestamp()
    assert values[("meshwright_cert_valid", "payment-1.default", "workload")] == 1
    assert values[("meshwright_cert_not_after_seconds", "payment-1.default", "workload")] == \
        datetime.datetime.fromisoformat(payment["certificate"]["not_after"]).timestamp()
    assert values[("meshwright_cert_valid", "order-1.default", "workload")] == 0
    assert values[("meshwright_cert_valid", "order-2.default", "workload")] == 0
    assert ("meshwright_cert_not_after_seconds", "order-2.default", "workload") not in values
    assert values[("meshwright_cert_not_after_seconds", "order-1.default", "root")] == root_end
    assert f'serial="{good}"' in text and f'serial="{expired}"' in text

    # Unchanged certificates: the same file, untouched (check mode says so too).
    inode = os.stat(path).st_ino
    infos_again = {proxy: cert_info(str(tmp_path / proxy.split(".")[0])) for proxy in infos}
    assert not run_module("mesh_cert_metrics", check=True, path=path, proxies=infos_again)["changed"]
    assert not run_module("mesh_cert_metrics", path=path, proxies=infos_again)["changed"]
    assert os.stat(path).st_ino == inode and open(path).read() == text
    # A mode changed by hand is put back.
    os.chmod(path, 0o600)
    assert run_module("mesh_cert_metrics", path=path, proxies=infos_again)["changed"] and mode(path) == 0o644
    # A renewed certificate is a new file.
    renewed = install(ca, str(tmp_path / "order-1"), "order-1.default", ORDER_ID)
    infos_again["order-1.default"] = cert_info(str(tmp_path / "order-1"))
    after = run_module("mesh_cert_metrics", diff=True, path=path, proxies=infos_again)
    assert after["changed"] and f'serial="{renewed}"' in open(path).read() and f'serial="{expired}"' not in open(path).read()
    assert parse(open(path).read())[("meshwright_cert_valid", "order-1.default", "workload")] == 1


def test_metrics_refuse_what_is_not_a_cert_info_result(tmp_path):
    bad = run_module("mesh_cert_metrics", path=str(tmp_path / "m.prom"), proxies={"payment-1.default": "yes"})
    assert bad["failed"] and bad["msg"] == "proxies.payment-1.default: expected mesh_cert_info's result (a dict), got str"
    broken = run_module("mesh_cert_metrics", path=str(tmp_path / "m.prom"), proxies={"payment-1.default": {"certificate": {"serial": "01"}}})
    assert broken["failed"] and broken["msg"].startswith("proxies: not mesh_cert_info results (KeyError")
    assert not os.path.exists(tmp_path / "m.prom")


def test_the_controller_report_writes_the_same_metrics_and_the_json_each_once(tmp_path):
    """mesh_cert_report (the controller's action): the Prometheus text mesh_cert_metrics writes on a
    host, and the JSON report; check mode writes nothing; unchanged results leave both files as they are."""
    ca = str(tmp_path / "ca")
    make_ca(ca, tmp_path)
    install(ca, str(tmp_path / "payment-1"), "payment-1.default", PAYMENT_ID)
    infos = {proxy: cert_info(str(tmp_path / proxy.split(".")[0])) for proxy in ("payment-1.default", "order-2.default")}
    prom, report, host_prom = (str(tmp_path / "out" / name) for name in ("certs.prom", "certs.json", "host.prom"))
    checked = run_module("mesh_cert_report", check=True, diff=True, proxies=infos, prom_path=prom, json_path=report)
    assert checked["changed"] and checked["paths"] == [report, prom] and not os.path.exists(tmp_path / "out")
    assert json.loads(checked["diff"][0]["after"]) == infos and "meshwright_cert_valid" in checked["diff"][1]["after"]
    written = run_module("mesh_cert_report", proxies=infos, prom_path=prom, json_path=report)
    assert written["changed"] and not written.get("failed"), written
    assert json.load(open(report)) == infos and mode(report) == 0o644 and mode(prom) == 0o644
    run_module("mesh_cert_metrics", path=host_prom, proxies=infos)
    assert open(prom).read() == open(host_prom).read()
    inodes = os.stat(prom).st_ino, os.stat(report).st_ino
    assert not run_module("mesh_cert_report", proxies=infos, prom_path=prom, json_path=report)["changed"]
    assert (os.stat(prom).st_ino, os.stat(report).st_ino) == inodes
    bad = run_module("mesh_cert_report", proxies={"payment-1.default": "yes"}, prom_path=prom)
    assert bad["failed"] and bad["msg"] == "proxies.payment-1.default: expected mesh_cert_info's result (a dict), got str"


INVENTORY = """\
mesh:
  hosts:
    payment-1: {mesh_proxy: payment-1.default}
    order-1: {mesh_proxy: order-1.default}
    order-2: {mesh_proxy: order-2.default}
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    mesh_config_paths: [%(seed)s]
    mesh_config_dir: "%(work)s/{{ inventory_hostname }}/proxy"
"""


def test_cert_report_playbook_writes_metrics_on_the_controller_and_per_host(tmp_path):
    """cert_report.yml with -e cert_report_prom and -e cert_report_textfile_dir: one file with all
    proxies, one per proxy on its host, the CA in the table; a second run changes nothing. It runs
    in a network namespace of its own: the seed mesh's admin ports are fixed, and nothing of
    another test may answer there."""
    work = tmp_path / "hosts"
    ca = str(tmp_path / "ca")
    make_ca(ca, tmp_path)
    install(ca, str(work / "payment-1" / "certs"), "payment-1.default", PAYMENT_ID)
    install(ca, str(work / "order-1" / "certs"), "order-1.default", ORDER_ID, signed_days_ago=40)
    (tmp_path / "hosts.yml").write_text(INVENTORY % {"seed": SEED, "work": work})
    prom, textfiles = str(tmp_path / "controller" / "meshwright-certs.prom"), str(tmp_path / "textfile")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    playbook = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                os.path.join(ROOT, "playbooks", "cert_report.yml"), "-e", json.dumps({"cert_report_prom": prom, "cert_report_textfile_dir": textfiles})]

    def run():
        result = subprocess.run(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *playbook], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        return output, sum(int(n) for n in re.findall(r"\s:\s+ok=\d+\s+changed=(\d+)", output))

    output, changed = run()
    assert changed == 4  # the controller's file (counted for the host that ran it) and each proxy's on its host
    assert re.search(r"root\s+CN=meshwright root CA,O=cluster.local\s+\w{12}\.\.\s+\d{4}-\d\d-\d\d\s+(29\.9\d|30\.0)\s+2  ! expires within 90 days", output), output
    assert re.search(r"order-2\.default\s+no certificate", output), output
    everything = parse(open(prom).read())
    assert {proxy for _, proxy, _ in everything} == {"payment-1.default", "order-1.default", "order-2.default"}
    assert everything[("meshwright_cert_valid", "order-1.default", "workload")] == 0
    assert not [key for key in everything if key[0] == "meshwright_cert_envoy_in_use"]  # no Envoy answers here: not known
    assert sorted(os.listdir(textfiles)) == ["meshwright-certs-order-1.default.prom", "meshwright-certs-order-2.default.prom",
                                             "meshwright-certs-payment-1.default.prom"]
    own = parse(open(os.path.join(textfiles, "meshwright-certs-payment-1.default.prom")).read())
    assert {proxy for _, proxy, _ in own} == {"payment-1.default"} and own[("meshwright_cert_valid", "payment-1.default", "root")] == 1
    before = {name: open(os.path.join(textfiles, name)).read() for name in os.listdir(textfiles)}
    assert run()[1] == 0
    assert {name: open(os.path.join(textfiles, name)).read() for name in os.listdir(textfiles)} == before
