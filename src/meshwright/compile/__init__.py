"""Istio API + registry -> Envoy resources per proxy. Pure and deterministic."""
