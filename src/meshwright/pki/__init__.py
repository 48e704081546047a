"""The mesh CA (Istio's Citadel): roots, intermediates, workload certificates, trust bundles.

One module per job: ca (authorities), csr (key and CSR, made on the workload's host),
workload (signing a CSR for the identity the mesh gives that workload), bundle (trust
bundles), info (reading a certificate, renewal), spiffe (identity names), store (files).
"""
