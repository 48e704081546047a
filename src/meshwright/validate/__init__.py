"""Validation of mesh config: shape, references, semantics, then Envoy's own view."""
