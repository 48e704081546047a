"""deliver/yaml_text.py writes the text PyYAML writes: on every file of every golden case and
on generated documents full of what makes YAML hard (indicators, numbers and bools as text,
quotes, non-ASCII, line breaks, long strings, deep nesting, empty containers)."""

from __future__ import annotations

import glob
import os
import random

import pytest
import yaml

from meshwright.deliver import yaml_text as module
from meshwright.deliver.yaml_text import pyyaml_text, yaml_text
from tests.golden.golden import CASES_DIR

# Strings chosen to hit each of PyYAML's decisions: plain, quoted because a resolver would
# read them back as something else, quoted for an indicator, double-quoted for what only
# escapes can say, wrapped when long.
TRICKY_STRINGS = [
    "", " ", "a", "abc", "outbound|8080|v1|svc.ns.svc.cluster.local", "10s", "0s", "10", "-1", "1.5", "1e3", "0x1f", "0o7",
    ".inf", "-.inf", ".nan", "true", "True", "TRUE", "false", "yes", "No", "on", "OFF", "y", "n", "Y", "null", "Null", "~",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "1:20", "190:20:30", "<<", "=", "@type", "'quoted'", '"double"', "a: b",
    "a:b", "a:", ":a", "- a", "-a", "-", "? a", "?a", "# c", "a #c", "a#c", "*alias", "&anchor", "!tag", "|", ">", "%", "`",
    "{a}", "[a]", "a,b", "a, b", "ünïcödé", "tab\there", "line\nbreak", "trailing ", " leading", "\x00nul", "\u2028", "a\\b",
    "spiffe://cluster.local/ns/default/sa/frontend", "10.0.0.1", "127.0.0.1", "1.2.3", "1.2", "10.0.0.1.5", "1000.0.0.1", "::1", "fd00::1", "/api/v1/*", "*", "*.example.com", "^/api/(.*)$", "%{x}",
    "x" * 200, "word " * 150, "-----BEGIN CERTIFICATE-----\nMIIB\nabc==\n-----END CERTIFICATE-----\n", "a\n\nb", "a\n", "\n", " a\nb ",
    "it's\na 'quote'", "tab\t\nx", "ü\nx", "é" * 300, ("a" * 99 + " ") * 12, "a" * 1200, "a/b" * 400,
]
TRICKY_KEYS = ["a", "name", "@type", "on", "y", "1", "a b", "a:b", "k" * 99, "k" * 100, "k" * 127, "k" * 128, "k" * 200, "é", "null", ""]
SCALARS = [0, 1, -7, 4294967295, 10 ** 20, 0.5, 1e17, -2.25, 1e-07, float("inf"), True, False, None, {}, []]


def _value(rng: random.Random, depth: int):
    roll = rng.random()
    if depth < 5 and roll < 0.25:
        return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randint(1, 4))}
    if depth < 5 and roll < 0.4:
        return [_value(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    if roll < 0.8:
        return rng.choice(TRICKY_STRINGS)
    return rng.choice(SCALARS)


def _key(rng: random.Random) -> str:
    return rng.choice(TRICKY_KEYS) if rng.random() < 0.3 else rng.choice(["name", "type", "cluster", "routes", "match", "z", "b"])


@pytest.mark.parametrize("seed", range(20))
def test_generated_documents_read_as_pyyaml_writes_them(seed):
    rng = random.Random(seed)
    for _ in range(150):
        document = {_key(rng): _value(rng, 0) for _ in range(rng.randint(1, 6))}
        assert yaml_text(document) == pyyaml_text(document)


@pytest.mark.parametrize("value", TRICKY_STRINGS + SCALARS)
def test_every_tricky_value_at_every_place(value):
    for document in ({"k": value}, {"k": [value]}, {"k": [[value]]}, {"a": {"b": [{"c": value, "d": value}]}}, {"k" * 60: {"x" * 60: value}}):
        assert yaml_text(document) == pyyaml_text(document), document


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_every_tricky_key(key):
    for document in ({key: 1}, {key: {key: [key]}}, {"a": [{key: "v", "b": 2}]}):
        assert yaml_text(document) == pyyaml_text(document), document


def test_every_rendered_file_of_the_golden_cases():
    files = glob.glob(os.path.join(CASES_DIR, "*", "expected", "**", "*.yaml"), recursive=True)
    assert len(files) > 50
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for document in yaml.load_all(handle, Loader=yaml.SafeLoader):
                assert yaml_text(document) == pyyaml_text(document), path


def test_a_document_it_is_unsure_of_goes_to_pyyaml(monkeypatch):
    calls = []
    monkeypatch.setattr(module, "pyyaml_text", lambda document: calls.append(document) or "pyyaml\n")
    assert yaml_text({"k": "a" * 2000 + " b"}) == "pyyaml\n"
    assert yaml_text({"k": (1, 2)}) == "pyyaml\n"
    assert yaml_text({"k": "plain"}) == "k: plain\n"
    assert len(calls) == 2
