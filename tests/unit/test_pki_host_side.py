"""The host side of workload certificates: the key and CSR are made on the workload's host,
whose Python has only the standard library and the distribution's python3-cryptography
(Debian 12: 38.0), so the private key never leaves it. csr.py and info.py run there as they
are (Ansible module_utils ships them), with no other meshwright module."""

from __future__ import annotations

import ast
import datetime
import json
import os
import subprocess
import sys

import meshwright.pki.csr
import meshwright.pki.info
import meshwright.pki.store
from meshwright.pki import ca, workload

HOST_PYTHON = "/usr/bin/python3"  # the system Python with python3-cryptography (.ci/run installs it)
HOST_MODULES = (meshwright.pki.csr.__file__, meshwright.pki.info.__file__)
# Writing the certs directory happens on the host too.
HOST_ONLY_STDLIB = (meshwright.pki.store.__file__,)

HOST_SCRIPT = """
import importlib.util, json, sys, datetime
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
csr, info = load("mesh_csr", sys.argv[1]), load("mesh_info", sys.argv[2])
import cryptography
if sys.argv[3] == "make":
    key = csr.make_private_key()
    print(json.dumps({"cryptography": cryptography.__version__, "key": key.decode(), "csr": csr.make_csr(key, sys.argv[4]).decode()}))
else:
    chain, key = sys.stdin.read().split("\\n\\n", 1)
    leaf = info.first_certificate(chain.encode())
    now = datetime.datetime.fromisoformat(sys.argv[4])
    print(json.dumps({"matches": csr.key_matches_certificate(key.encode(), chain.encode()), **info.describe(leaf, now).as_dict()}))
"""


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_host_modules_import_only_the_standard_library_and_cryptography():
    for path in HOST_MODULES + HOST_ONLY_STDLIB:
        allowed = {"cryptography"} if path in HOST_MODULES else set()
        outside = {name for name in _imports(path) if name not in sys.stdlib_module_names and name not in allowed}
        assert not outside, f"{os.path.basename(path)} imports {outside}: hosts only have the standard library and python3-cryptography"


def _host(*args: str, stdin: str = "") -> dict:
    result = subprocess.run([HOST_PYTHON, "-c", HOST_SCRIPT, *HOST_MODULES, *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_key_and_csr_made_with_the_hosts_cryptography_are_signed_by_the_controller():
    """The host makes its key and CSR with its own python3-cryptography; the controller signs
    it for the workload's identity; the host sees its new certificate matches its key, whose
    identity it carries and when it is due for renewal."""
    spiffe_id = "spiffe://cluster.local/ns/shop/sa/checkout"
    made = _host("make", spiffe_id)
    assert int(made["cryptography"].split(".")[0]) < 42, "expected the distribution's older cryptography on the host side"
    now = datetime.datetime.now(datetime.timezone.utc)
    root = ca.make_root("cluster.local", now=now)
    chain = workload.sign_csr(made["csr"].encode(), spiffe_id, ca.make_intermediate(root, "site-a", now=now), now=now)
    seen = _host("describe", (now + datetime.timedelta(days=21)).isoformat(), stdin=chain.decode() + "\n" + made["key"])
    assert seen["matches"] is True
    assert seen["spiffe_id"] == spiffe_id
    assert seen["needs_renewal"] is True and 8.9 < seen["days_left"] < 9.1
