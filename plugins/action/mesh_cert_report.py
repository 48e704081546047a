# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_cert_report: write the proxies' certificate report on the controller
(JSON, Prometheus text), in the controller's Ansible process (documentation:
plugins/modules/mesh_cert_report.py)."""

from __future__ import annotations

import datetime
import json
import os

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_file_set import write_atomic
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_metrics import render_metrics
from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction, ControllerTask


def report_json(proxies: dict) -> str:
    """As ansible's to_nice_json writes it: sorted keys, indent 4."""
    return json.dumps(proxies, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def current_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_report(task: ControllerTask, path: str, text: str) -> tuple[bool, dict]:
    """(changed, its diff) for one report file."""
    before = current_text(path)
    changed = before != text
    if changed and not task.check_mode:
        try:
            # Its folder first; then meshwright's one atomic writer (a reader never sees half a file).
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
            write_atomic(os.path.abspath(path), text, int(task.params["mode"], 8))
        except OSError as error:
            task.fail(f"cannot write {path}: {error}")
    return changed, {"before": before or "", "after": text, "before_header": path, "after_header": path}


class ActionModule(ControllerAction):
    WHAT = "to write the certificate report on the controller"
    ARGUMENT_SPEC = dict(
        proxies=dict(type="dict", required=True),
        json_path=dict(type="path"),
        prom_path=dict(type="path"),
        mode=dict(type="str", default="0644"),
    )

    def work(self, task, task_vars):
        proxies = task.params["proxies"]
        for proxy, info in proxies.items():
            if info is not None and not isinstance(info, dict):
                task.fail(f"proxies.{proxy}: expected mesh_cert_info's result (a dict), got {type(info).__name__}")
        outputs = []
        if task.params["json_path"]:
            outputs.append((task.params["json_path"], report_json(proxies)))
        if task.params["prom_path"]:
            try:
                outputs.append((task.params["prom_path"], render_metrics(proxies, datetime.datetime.now(datetime.timezone.utc))))
            except (KeyError, TypeError, ValueError) as error:
                task.fail(f"proxies: not mesh_cert_info results ({type(error).__name__}: {error})")
        results = [write_report(task, path, text) for path, text in outputs]
        result = dict(changed=any(changed for changed, diff in results), paths=[path for path, text in outputs])
        if task.diff and results:
            result["diff"] = [diff for changed, diff in results]
        return result
