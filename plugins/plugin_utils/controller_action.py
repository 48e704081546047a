# -*- coding: utf-8 -*-
"""The one way meshwright's controller work runs: as an action plugin, in the controller's
Ansible process (as community.crypto's openssl_privatekey_pipe), with the Python that runs
ansible-playbook - no delegate_to, no interpreter override. It validates the task's arguments
against the action's argument spec, runs its work, and turns the core's errors into a failed
result here, once, for every controller action (kubernetes.core's runner does the same)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import missing_required_lib
from ansible.plugins.action import ActionBase

try:
    from meshwright.compile.proxy import UnknownProxy
    from meshwright.deliver.bundle import RenderError
    from meshwright.lifecycle.upgrade_plan import UpgradePlanError
    from meshwright.pki.ca_folder import CaError
    from meshwright.pki.workload import CsrRefused
except ImportError as error:
    CORE_IMPORT_ERROR: ImportError | None = error
    CORE_ERRORS: tuple[type[Exception], ...] = ()
else:
    CORE_IMPORT_ERROR = None
    CORE_ERRORS = (CaError, CsrRefused, RenderError, UnknownProxy, UpgradePlanError)


class TaskFailed(Exception):
    """Fails the task with msg and these result keys (what fail_json did in a module)."""

    def __init__(self, msg: str, **result):
        super().__init__(msg)
        self.result = dict(result, msg=msg)


class ControllerTask:
    """What a controller action's work sees of its task: the validated arguments, check and diff
    mode, and warnings to show."""

    def __init__(self, params: dict, check_mode: bool, diff: bool):
        self.params = params
        self.check_mode = check_mode
        self.diff = diff
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def fail(self, msg: str, **result):
        raise TaskFailed(msg, **result)


def core_error_result(error: Exception) -> dict:
    """The failed result of one of the core's errors: its message, every problem of a mesh config."""
    result = dict(failed=True, msg=str(error))
    if isinstance(error, RenderError):
        result["problems"] = [str(problem) for problem in error.problems]
    host = getattr(error, "host", None)
    if host is not None:
        result["host"] = host
    return result


class ControllerAction(ActionBase):
    """Base of the controller actions: set ARGUMENT_SPEC and WHAT (for the missing-library
    message), implement work(task, task_vars) -> the result."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    ARGUMENT_SPEC: dict = {}
    WHAT = "to do the mesh's controller work"

    def work(self, task: ControllerTask, task_vars: dict) -> dict:
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if CORE_IMPORT_ERROR is not None:
            raise AnsibleActionFail(missing_required_lib("meshwright", reason=f"{self.WHAT} (in the Python that runs ansible-playbook)"))
        validation, params = self.validate_argument_spec(self.ARGUMENT_SPEC)
        task = ControllerTask(params, bool(self._task.check_mode), bool(self._task.diff))
        try:
            result.update(self.work(task, task_vars or {}))
        except TaskFailed as failed:
            result.update(failed.result, failed=True)
        except CORE_ERRORS as error:
            result.update(core_error_result(error))
        result.setdefault("changed", False)
        if task.warnings:
            result["warnings"] = task.warnings
        return result
