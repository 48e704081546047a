"""Typed Istio API resources and their loading from YAML."""

from meshwright.model.resource import Resource, Source
from meshwright.model.load import load_paths, LoadResult

__all__ = ["Resource", "Source", "load_paths", "LoadResult"]
