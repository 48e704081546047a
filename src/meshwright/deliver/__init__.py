"""Delivery of compiled config and identities to proxies: files Envoy watches (and, later,
an xDS server), and the signed certificate of each proxy's own SPIFFE ID (identity.py)."""
