#!/usr/bin/env python3
"""Copy the host-side module sources into the collection's plugins folder.

The sources live once: modules/*.py and module_utils/*.py at the top of the repository (some
module_utils are links to the standard-library-only files of the core, src/meshwright, that the
hosts run too). The collection `meshwright.mesh` ships them as plugins/modules and
plugins/module_utils, real files whose imports name the collection. The copies are committed, so a
clone builds the collection as it is; tests/unit/test_collection_sync.py fails when they are stale.

    python tools/sync_collection.py          write the copies (and remove copies of deleted sources)
    python tools/sync_collection.py --check  exit 1 naming each stale copy, write nothing
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# source folder -> the collection's folder of its copies
FOLDERS = {"modules": "plugins/modules", "module_utils": "plugins/module_utils"}
LEGACY_IMPORT = "from ansible.module_utils.mesh_"
COLLECTION_IMPORT = "from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_"
HEADER = "# Copied from {source} by tools/sync_collection.py: edit the source, then run it.\n"


def collection_text(source: str) -> str:
    """The copy's text: the source (through a link) with its imports naming the collection."""
    with open(os.path.join(ROOT, source), encoding="utf-8") as handle:
        text = handle.read().replace(LEGACY_IMPORT, COLLECTION_IMPORT)
    # After the shebang and coding lines, where a module's header starts.
    lines = text.splitlines(keepends=True)
    keep = 0
    while keep < len(lines) and keep < 2 and (lines[keep].startswith("#!") or "coding" in lines[keep]):
        keep += 1
    return "".join(lines[:keep]) + HEADER.format(source=source) + "".join(lines[keep:])


def wanted_copies() -> dict[str, str]:
    """Copy path (relative to the root) -> its text."""
    copies = {}
    for source_dir, target_dir in FOLDERS.items():
        for path in sorted(glob.glob(os.path.join(ROOT, source_dir, "*.py"))):
            name = os.path.basename(path)
            copies[f"{target_dir}/{name}"] = collection_text(f"{source_dir}/{name}")
    return copies


def is_copy(full: str) -> bool:
    """Whether a file of plugins/ is one this tool wrote (the collection's own plugins are not)."""
    with open(full, encoding="utf-8") as handle:
        return "by tools/sync_collection.py" in handle.read(400)


def stale_copies() -> tuple[dict[str, str], list[str]]:
    """(copies to write, copies whose source is gone)."""
    wanted = wanted_copies()
    to_write = {}
    for path, text in wanted.items():
        full = os.path.join(ROOT, path)
        if os.path.islink(full) or not os.path.isfile(full) or open(full, encoding="utf-8").read() != text:
            to_write[path] = text
    gone = []
    for target_dir in FOLDERS.values():
        for full in sorted(glob.glob(os.path.join(ROOT, target_dir, "*.py"))):
            path = os.path.relpath(full, ROOT)
            if path not in wanted and is_copy(full):
                gone.append(path)
    return to_write, gone


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="name the stale copies and exit 1; write nothing")
    args = parser.parse_args(argv)
    to_write, gone = stale_copies()
    if args.check:
        for path in sorted(to_write) + gone:
            print(f"{path}: stale copy (run: python tools/sync_collection.py)", file=sys.stderr)
        return 1 if to_write or gone else 0
    for path, text in to_write.items():
        full = os.path.join(ROOT, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.islink(full):
            os.unlink(full)
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(full, 0o644)
    for path in gone:
        os.unlink(os.path.join(ROOT, path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
