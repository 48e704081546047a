"""The proxy's own certificate and the mesh's trust bundle, as Envoy SDS secrets (Istio's
names: "default" and "ROOTCA").

TLS contexts name the secrets with an SDS config; delivery points that at files
(sds-default.yaml, sds-rootca.yaml) whose secrets name the PEM files in the proxy's certs
directory, with a watch on that directory: a renewed certificate written there is used
without a restart.

A proxy on xDS reads the same two secrets for its static `xds-grpc` cluster from files in its
certs directory itself (certs_dir_secret_files, which `meshwright agent` writes there): the
connection to the control plane then takes a renewed certificate too (compile/xds_bootstrap.py).
"""

from __future__ import annotations

import json
import os

from meshwright.compile.envoy_values import ADS, TYPE_PREFIX
from meshwright.pki.store import CHAIN_FILE, KEY_FILE, ROOTS_FILE

SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
DEFAULT_SECRET = "default"  # the proxy's certificate chain and key
ROOT_SECRET = "ROOTCA"  # the trust bundle it verifies peers with


def sds_secret_config(name: str) -> dict:
    return {"name": name, "sds_config": ADS}


def workload_secrets(certs_dir: str) -> list[dict]:
    """The two secrets, reading the PEM files in certs_dir (the directory is watched: Envoy
    re-reads the files when any of them is replaced)."""
    watch = {"path": certs_dir}
    return [
        {
            "name": DEFAULT_SECRET,
            "tls_certificate": {
                "certificate_chain": {"filename": os.path.join(certs_dir, CHAIN_FILE)},
                "private_key": {"filename": os.path.join(certs_dir, KEY_FILE)},
                "watched_directory": watch,
            },
        },
        {
            "name": ROOT_SECRET,
            "validation_context": {"trusted_ca": {"filename": os.path.join(certs_dir, ROOTS_FILE)}, "watched_directory": watch},
        },
    ]


# The secrets of the `xds-grpc` cluster: default's and ROOTCA's contents under names of their
# own (Istio names its file-based secrets "file-..." too), so that `proxy-config secrets` tells
# them from what the control plane sends; each in its own file beside the certificate (a
# file-based SDS subscription takes one resource).
FILE_SECRETS = {DEFAULT_SECRET: "file-default", ROOT_SECRET: "file-rootca"}
FILE_SECRET_FILES = {DEFAULT_SECRET: "sds-default.json", ROOT_SECRET: "sds-rootca.json"}


def certs_dir_secret_files(certs_dir: str) -> dict[str, str]:
    """file name -> JSON text of the SDS files in certs_dir, each holding one of
    workload_secrets(certs_dir) under its FILE_SECRETS name. The text depends on certs_dir only:
    it names the PEM files, which Envoy re-reads when they change (their watched directory)."""
    return {FILE_SECRET_FILES[secret["name"]]: json.dumps({"resources": [{"@type": SECRET, **secret, "name": FILE_SECRETS[secret["name"]]}]},
                                                          indent=2, sort_keys=True) + "\n"
            for secret in workload_secrets(certs_dir)}


def certs_dir_secret_config(name: str, certs_dir: str) -> dict:
    """An SDS secret config that reads the secret name (DEFAULT_SECRET or ROOT_SECRET) from its
    file in certs_dir, again whenever a file is moved into certs_dir (the agent's writes are renames there)."""
    source = {"path": os.path.join(certs_dir, FILE_SECRET_FILES[name]), "watched_directory": {"path": certs_dir}}
    return {"name": FILE_SECRETS[name], "sds_config": {"resource_api_version": "V3", "path_config_source": source}}


def secret_references(resource) -> list[dict]:
    """Every SDS secret config (a mapping with a name and an sds_config) inside a resource."""
    found = []
    if isinstance(resource, dict):
        if "sds_config" in resource and "name" in resource:
            found.append(resource)
        for value in resource.values():
            found += secret_references(value)
    elif isinstance(resource, list):
        for item in resource:
            found += secret_references(item)
    return found


# Fields whose values can hold no secret reference (an SdsSecretConfig is only found in TLS
# contexts and extensions' typed configs): a cluster's endpoints, the biggest part of a big
# proxy's clusters, are not walked.
_NO_SECRETS = frozenset({"load_assignment"})


def secret_names(value, memo: dict | None = None, memo_depth: int = 2) -> frozenset[str]:
    """The names of the SDS secret configs inside value; memo as with_secret_references's."""
    if memo is not None and memo_depth == 0 and type(value) in (dict, list):
        found = memo.get(id(value))
        if found is None:
            found = memo[id(value)] = (value, secret_names(value, None, -1))
        return found[1]
    names: frozenset[str] = frozenset()
    if isinstance(value, dict):
        if "sds_config" in value and "name" in value:
            names = frozenset((value["name"],))
        for key, item in value.items():
            if key not in _NO_SECRETS:
                names |= secret_names(item, memo, memo_depth - 1)
    elif isinstance(value, list):
        for item in value:
            names |= secret_names(item, memo, memo_depth - 1)
    return names


def with_secret_references(value, replace, memo: dict | None = None, memo_depth: int = 2):
    """value with every SDS secret config (see secret_references) r replaced by replace(r),
    copying only the mappings and lists on the way to one: the rest is the same objects,
    which other proxies may share (compiled config is never changed in place). memo (id ->
    (object, result)), kept by the caller for one replace, answers for the objects memo_depth
    levels down that it meets again (in a list of resources: their fields' values, what
    proxies share), so their insides are not walked again."""
    if memo is not None and memo_depth == 0 and type(value) in (dict, list):
        found = memo.get(id(value))
        if found is None:
            found = memo[id(value)] = (value, _with_secret_references(value, replace, memo, -1))
        return found[1]
    return _with_secret_references(value, replace, memo, memo_depth - 1)


def _with_secret_references(value, replace, memo, memo_depth):
    if isinstance(value, dict):
        if "sds_config" in value and "name" in value:
            return replace(value)
        out = None
        for key, item in value.items():
            if key in _NO_SECRETS:
                continue
            new = with_secret_references(item, replace, memo, memo_depth)
            if new is not item:
                out = out if out is not None else dict(value)
                out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        items = [with_secret_references(item, replace, memo, memo_depth) for item in value]
        return value if all(new is old for new, old in zip(items, value)) else items
    return value
