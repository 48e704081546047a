"""The compiler is a pure function of the mesh: the same resources give byte-identical files,
whatever order the documents come in and however they are split into files. (Delivery and
the Ansible modules rely on it: an unchanged mesh rewrites nothing and restarts nothing.)"""

from __future__ import annotations

import os
import random
import re

import pytest

from tests.golden.golden import CASES_DIR, case_names, render_all

FILES_WHEN_SPLIT = 3


def documents(path: str) -> list[str]:
    """The YAML documents of a file, as text (comments kept with the document they precede)."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return [doc.strip("\n") + "\n" for doc in re.split(r"^---$", text, flags=re.MULTILINE) if doc.strip()]


@pytest.mark.parametrize("case", case_names())
def test_same_bytes_twice_and_with_documents_shuffled_and_split(case, tmp_path):
    mesh = os.path.join(CASES_DIR, case, "mesh.yaml")
    first = render_all([mesh], str(tmp_path / "first"))
    second = render_all([mesh], str(tmp_path / "second"))
    assert second == first

    docs = documents(mesh)
    shuffled = list(docs)
    random.Random(case).shuffle(shuffled)
    shuffled.reverse()  # whatever the shuffle gives, the first document moves
    assert shuffled != docs
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    for index in range(FILES_WHEN_SPLIT):
        part = shuffled[index::FILES_WHEN_SPLIT]
        # File names sort in another order than the parts were cut.
        (split_dir / f"{FILES_WHEN_SPLIT - index}-part.yaml").write_text("---\n".join(part))
    reordered = render_all([str(split_dir)], str(tmp_path / "reordered"))
    assert reordered.keys() == first.keys()
    for proxy, files in first.items():
        assert reordered[proxy] == files, f"{case}/{proxy}: rendered files depend on the input order"
