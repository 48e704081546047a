"""Istio documents as users copy them (tests/istio_corpus, README there says where each shape
comes from): each validated as a user would, `meshwright validate standins.yaml FILE` with
envoy --mode validate, and accepted."""

from __future__ import annotations

import os

import pytest

from meshwright.cli import main

CORPUS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "istio_corpus")
STANDINS = os.path.join(CORPUS, "standins.yaml")
DOCUMENTS = sorted(name for name in os.listdir(CORPUS) if name.endswith(".yaml") and name != "standins.yaml")


def test_the_corpus_has_its_documents():
    assert len(DOCUMENTS) >= 8


@pytest.mark.parametrize("document", DOCUMENTS)
def test_an_istio_document_is_accepted(document, capsys):
    code = main(["validate", STANDINS, os.path.join(CORPUS, document)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "valid" in out and "skipped envoy --mode validate" not in out
    assert "error" not in err
