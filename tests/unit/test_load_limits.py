"""Loading is bounded (issue #10, item 6): aliases are refused, size, documents and depth are
capped with an error that names the limit and the variable that raises it, only regular files
are read, and a 10,000-service estate's worth of YAML loads fast."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from meshwright.cli import main
from meshwright.model.load import load_paths

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from load import write_estate  # noqa: E402  bench/load.py: the estate the benchmark loads

ENTRY = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e, namespace: default}\nspec:\n  hosts: [e.example.com]\n"


def messages(paths) -> list[str]:
    return [str(problem) for problem in load_paths([str(p) for p in paths]).problems]


def test_an_alias_bomb_is_refused_at_once_naming_where(tmp_path):
    """Nine levels of nine aliases would expand to 387 million strings: refused without expanding."""
    lines = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ENTRY + "\n".join(lines) + "\n")
    start = time.process_time()
    assert messages([bomb]) == [f"{bomb}:7: spec.l1[0]: YAML aliases (*name) are not accepted: write the value anchored at line 6 out in full"]
    assert time.process_time() - start < 1


def test_merge_keys_are_refused(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(ENTRY + "  base: &b {a: 1}\n  other:\n    <<: {a: 2}\n")
    assert messages([path]) == [f"{path}:8: spec.other: YAML merge keys (<<) are not accepted: write the fields out"]


@pytest.mark.parametrize("variable,value,content,message", [
    ("MESHWRIGHT_MAX_DOCUMENTS", "3", "---\n" + ENTRY * 1 + ("---\n" + ENTRY) * 3,
     "the mesh config has more than 3 documents (the limit is 3 documents: raise it with the environment variable MESHWRIGHT_MAX_DOCUMENTS)"),
    ("MESHWRIGHT_MAX_INPUT_MB", "1", ENTRY + "  # " + "x" * 1_000_000 + "\n",
     "the mesh config is larger than 1 MB in all (the limit is 1 MB: raise it with the environment variable MESHWRIGHT_MAX_INPUT_MB)"),
    ("MESHWRIGHT_MAX_DOCUMENT_KB", "2", ENTRY + "  description: " + "x" * 3000 + "\n",
     "the document at line 1 is larger than 2 KB (the limit is 2 KB: raise it with the environment variable MESHWRIGHT_MAX_DOCUMENT_KB)"),
    ("MESHWRIGHT_MAX_DEPTH", "5", ENTRY + "  a: [[[[[[x]]]]]]\n",
     "nested more than 5 levels deep (the limit is 5 levels: raise it with the environment variable MESHWRIGHT_MAX_DEPTH)"),
])
def test_each_limit_names_itself_and_how_to_raise_it(tmp_path, monkeypatch, variable, value, content, message):
    path = tmp_path / "mesh.yaml"
    path.write_text(content)
    monkeypatch.setenv(variable, value)
    [problem] = messages([path])
    assert problem.startswith(f"{path}:") and problem.endswith(message)
    monkeypatch.setenv(variable, str(int(value) * 100))
    assert messages([path]) == []


def test_the_default_depth_limit_stops_990_levels_with_a_message(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(ENTRY + "  a: " + "[" * 990 + "]" * 990 + "\n")
    [problem] = messages([path])
    assert "nested more than 100 levels deep" in problem


def test_a_limit_that_is_not_a_number_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHWRIGHT_MAX_DOCUMENTS", "many")
    assert messages([tmp_path]) == ["environment variable MESHWRIGHT_MAX_DOCUMENTS:0: 'many' is not a limit: expected a whole number of documents from 1 to 100000000"]


def test_a_fifo_named_yaml_is_not_waited_on(tmp_path):
    """Reading a FIFO waits for a writer forever: it is refused as what it is, at once."""
    (tmp_path / "base.yaml").write_text(ENTRY)
    os.mkfifo(tmp_path / "pipe.yaml")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(messages([tmp_path])), daemon=True)
    reader.start()
    reader.join(5)
    assert result == [[f"{tmp_path / 'pipe.yaml'}:0: cannot read: a FIFO; only regular files are read"]]


@pytest.mark.parametrize("path,kind", [("/dev/zero", "a character device"), ("/proc/self", "a directory")])
def test_special_files_are_refused(path, kind, capsys):
    code = main(["validate", "--envoy", "none", path])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{path}:0: cannot read: {kind}") or "no .yaml or .yml files in this directory" in err


@pytest.mark.parametrize("data,message", [
    ("kind: x\n".encode("utf-16"), "cannot read: the file is UTF-16 text; meshwright reads UTF-8"),
    (b"kind: caf\xe9\n", "cannot read: not UTF-8 text (byte 0xe9 at line 1); save the file as UTF-8"),
    (b"a: 1\nkind: \x00\n", "cannot read: control character U+0000 at line 2"),
    (b"a: " + b"9" * 5000 + b"\n", "a: cannot read the value 99999999999999999999...(5000 characters): Exceeds the limit (4300 digits)"),
])
def test_unreadable_text_says_why(tmp_path, data, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    [problem] = messages([path])
    assert message in problem


def test_a_byte_order_mark_is_fine_and_lines_count_from_it(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (ENTRY + "---\n" + ENTRY.replace("name: e", "name: f")).encode())
    loaded = load_paths([str(path)])
    assert loaded.problems == [] and [(r.name, r.source.line) for r in loaded.resources] == [("e", 1), ("f", 7)]


def test_an_estate_loads_fast(tmp_path):
    """5,100 documents, 2.6 MB (a tenth of the 10,000-service estate of bench/load.py): 14 s of
    CPU with the old loader, about 1 s now."""
    documents, size = write_estate(1000, str(tmp_path))
    start = time.process_time()
    loaded = load_paths([str(tmp_path)])
    seconds = time.process_time() - start
    assert (len(loaded.resources), loaded.problems) == (documents, [])
    assert seconds < 4, f"{documents} documents, {size} bytes: {seconds:.1f} s"
