"""Record when each task of a playbook run starts and ends, for the benchmarks: one JSON line per
task in the file named by MESHWRIGHT_TASK_TIMES ({"task": name, "start": s, "end": s}, seconds
since the epoch; a task ends when the next one starts or the play ends)."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_times
type: aggregate
short_description: Write each task's start and end time to $MESHWRIGHT_TASK_TIMES
description: For meshwright's benchmarks.
requirements: [MESHWRIGHT_TASK_TIMES set to a file path]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("MESHWRIGHT_TASK_TIMES")
        self._current = None

    def _close(self) -> None:
        if self._current and self._path:
            self._current["end"] = time.time()
            with open(self._path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(self._current) + "\n")
        self._current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self._current = {"task": task.get_name(), "start": time.time()}

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def v2_playbook_on_play_start(self, play):
        self._close()

    def v2_playbook_on_stats(self, stats):
        self._close()
