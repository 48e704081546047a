"""The mesh CA (Istio's Citadel): roots, intermediates, workload certificates, trust bundles.

One module per job: ca (authorities), csr (key and CSR, made on the workload's host),
workload (signing a CSR for exactly one expected SPIFFE ID), identity (that ID for a proxy
of the mesh), bundle (trust bundles), info (reading a certificate, renewal), spiffe (ID
names), store (a workload's certs directory). csr, info and store import nothing else of
meshwright: they run on hosts as they are (docs/security.md).
"""
