"""Sources of the mesh: the mesh config files or folders, watched.

A MeshFolder polls the modification times of every file under its paths; once they have
been quiet for 100 ms (or 1 s after the first change, whichever comes first: istiod's
debounce), the files are loaded and handed to on_loaded. Only the documents whose text (or
place in their file) changed are parsed again: the others give the resources they gave
before, the very objects, so that the plane finds what changed at once and an edit of one
WorkloadEntry among thousands takes the incremental path in milliseconds. on_loaded (the
plane's apply_loaded) validates what changed with the same checks as `meshwright validate`
and returns the problems of a bad edit (FILE:LINE messages), logged here; proxies then keep
the last good config.

Registries (Kubernetes, Marathon) come next as sources of their own; each hands the plane a
new validated mesh (ControlPlane.apply) or one changed resource.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from meshwright.check.pipeline import validate_mesh
from meshwright.mesh import Mesh
from meshwright.model.load import load_paths
from meshwright.problems import Problem

LOG = logging.getLogger("meshwright.serve")
QUIET_SECONDS, MAX_WAIT_SECONDS, POLL_SECONDS = 0.1, 1.0, 0.05


def load_valid(paths: list[str]) -> tuple[Mesh | None, list[Problem]]:
    """The mesh at paths, validated as `meshwright validate` does (without Envoy)."""
    return validate_mesh(load_paths(paths))


def fingerprint(paths: list[str]) -> tuple:
    """(path, mtime, size) of every file under paths: equal fingerprints, no edit."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # as the loader (model/load.py)
                for name in sorted(files):
                    if not name.startswith("."):
                        found.append(_stat(os.path.join(folder, name)))
        else:
            found.append(_stat(path))
    return tuple(found)


def _stat(path: str) -> tuple:
    try:
        info = os.stat(path)
    except OSError:
        return (path, None, None)
    return (path, info.st_mtime_ns, info.st_size)


class MeshFolder:
    """Watches paths; calls on_loaded(LoadResult) after an edit, which returns its problems
    (none: applied)."""

    def __init__(self, paths: list[str], on_loaded, quiet: float = QUIET_SECONDS, max_wait: float = MAX_WAIT_SECONDS):
        self.paths, self.on_loaded = paths, on_loaded
        self.quiet, self.max_wait = quiet, max_wait
        self._seen = fingerprint(paths)
        self._parsed: dict = {}  # the documents of the last load (model/load.py load_paths)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mesh-folder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        load_paths(self.paths, self._parsed)  # the documents as they are, kept for the first edit
        first_change = last_change = None
        while not self._stop.wait(POLL_SECONDS):
            now = time.monotonic()
            current = fingerprint(self.paths)
            if current != self._seen:
                self._seen = current
                first_change = first_change or now
                last_change = now
            if first_change is None or (now - last_change < self.quiet and now - first_change < self.max_wait):
                continue
            first_change = last_change = None
            try:
                self._reload()
            except Exception:  # a bug must not stop the watch: the plane keeps serving the last good mesh
                LOG.exception("reloading the mesh config failed; proxies keep the last good config")

    def _reload(self) -> None:
        started = time.monotonic()
        problems = self.on_loaded(load_paths(self.paths, self._parsed))
        if problems:
            for problem in problems:
                LOG.error("%s", problem)
            LOG.error("mesh config edit rejected (%d problem%s); proxies keep the last good config",
                      len(problems), "" if len(problems) == 1 else "s")
            return
        LOG.info("mesh config edit handled in %.3fs (loaded, validated, compiled, pushes queued)", time.monotonic() - started)
