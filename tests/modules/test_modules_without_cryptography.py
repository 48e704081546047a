"""The host modules that need python3-cryptography, on a host that lacks it: each fails with
Ansible's missing-library message (what to install, on which Python), not a traceback.

Each module runs in a Python of its own where `import cryptography` fails, as on a host without
python3-cryptography: a sitecustomize on PYTHONPATH blocks it before anything is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.modules.conftest import ROOT

BLOCK_CRYPTOGRAPHY = """
import sys

class NoCryptography:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoCryptography())
"""

RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.modules.conftest import run_module
print(json.dumps(run_module(sys.argv[2], **json.loads(sys.argv[3]))))
"""

ARGUMENTS = {
    "mesh_cert_info": {"certs_dir": "/nonexistent/certs"},
    "mesh_workload_csr": {"certs_dir": "/nonexistent/certs", "spiffe_id": "spiffe://cluster.local/ns/default/sa/a"},
    "mesh_workload_cert": {"certs_dir": "/nonexistent/certs", "bundle": "not read"},
}


@pytest.mark.parametrize("module", sorted(ARGUMENTS))
def test_a_host_without_cryptography_gets_the_missing_library_message(module, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_CRYPTOGRAPHY)
    result = subprocess.run([sys.executable, "-c", RUN, ROOT, module, json.dumps(ARGUMENTS[module])],
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["failed"] is True
    assert outcome["msg"].startswith("Failed to import the required Python library (cryptography (Debian and Ubuntu: "
                                     "python3-cryptography)) on "), outcome["msg"]
    assert f"Python {sys.executable}" in outcome["msg"]
