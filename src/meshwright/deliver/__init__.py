"""Delivery of compiled config to Envoy: files Envoy watches (and, later, an xDS server)."""
