"""The mesh CA (Istio's Citadel): roots, intermediates, workload certificates, trust bundles.

One module per job: ca (authorities), csr (key and CSR, made on the workload's host),
workload (signing a CSR for exactly one expected SPIFFE ID), bundle (trust bundles), info
(reading a certificate, renewal), spiffe (ID names), store (a workload's certs directory).
csr, info and store import nothing else of meshwright: they run on hosts as they are
(docs/security.md). The package knows nothing of the mesh config, so the compiler may use it;
the ID of a proxy of the mesh, and signing its CSR, is meshwright.deliver.identity.
"""
