"""`meshwright agent`: a workload host's certificates from the control plane's CSR service
(Istio's pilot-agent, its CA client part; docs/control-plane.md).

It makes a new key for every certificate (the key never leaves the host), sends a CSR for the
proxy's SPIFFE ID, authenticated by the current certificate (mTLS, renewal) when the certs
directory holds a valid one, else by a one-time join token. It writes key.pem, cert-chain.pem
and root-cert.pem into the certs directory all at once (pki/store.py: the files SDS names,
the directory Envoy watches), renews two thirds into the certificate's life, retries with
backoff while the control plane cannot be reached, and stops cleanly on SIGTERM. SIGHUP asks
for a renewal now (Ansible's root or intermediate rotation: a new trust bundle in --ca, a new
intermediate on the control plane); the trust bundle is read again for every certificate.

Beside them it writes the SDS files that name those three (compile/secrets.py
certs_dir_secret_files): the proxy's `xds-grpc` cluster reads its certificate and roots through
them, so its next connection to the control plane presents the renewed certificate.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import grpc
from cryptography import x509

from meshwright.compile.secrets import certs_dir_secret_files
from meshwright.deliver.file_set import write_atomic
from meshwright.pki.ca import CLOCK_SKEW
from meshwright.pki.csr import key_matches_certificate, make_csr, make_private_key
from meshwright.pki.spiffe import spiffe_id
from meshwright.pki.store import CHAIN_FILE, KEY_FILE, write_workload_certificates
from meshwright.serve.certificates import CA_SERVER_NAME, PATH

LOG = logging.getLogger("meshwright.agent")
RENEW_FRACTION = 2 / 3
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0
CALL_TIMEOUT = 10.0
SLEEP_SLICE = 0.5  # how soon a SIGHUP's renewal starts
# Refusals that trying again will not change (a retry would only fill the server's log).
FINAL = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)


def write_secret_files(certs_dir: str) -> list[str]:
    """The SDS files of certs_dir, each written atomically (a rename Envoy's watch sees) where
    it is missing or differs; the names written."""
    os.makedirs(certs_dir, mode=0o755, exist_ok=True)
    written = []
    for name, text in certs_dir_secret_files(certs_dir).items():
        path = os.path.join(certs_dir, name)
        try:
            with open(path, encoding="utf-8") as handle:
                if handle.read() == text:
                    continue
        except OSError:
            pass
        write_atomic(path, text)
        written.append(name)
    return written


class AgentError(Exception):
    """The agent cannot get a certificate and retrying will not help; the message says why."""


@dataclass(frozen=True)
class Held:
    """The certificate in the certs directory: its key and chain, when it was issued and expires."""

    key: bytes
    chain: bytes
    issued: datetime.datetime
    expires: datetime.datetime

    def renew_at(self) -> datetime.datetime:
        return self.issued + (self.expires - self.issued) * RENEW_FRACTION


def held_certificate(certs_dir: str) -> Held | None:
    """The certificate in certs_dir when there is one that matches its key; else None."""
    try:
        with open(os.path.join(certs_dir, KEY_FILE), "rb") as handle:
            key = handle.read()
        with open(os.path.join(certs_dir, CHAIN_FILE), "rb") as handle:
            chain = handle.read()
        leaf = x509.load_pem_x509_certificate(chain)
        if not key_matches_certificate(key, chain):
            return None
    except (OSError, ValueError):
        return None
    # Certificates start CLOCK_SKEW early (pki/ca.py): their life is counted from issue.
    issued = min(leaf.not_valid_before_utc + CLOCK_SKEW, leaf.not_valid_after_utc)
    return Held(key, chain, issued, leaf.not_valid_after_utc)


class Agent:
    """servers: the CSR ports (mTLS) of the control plane's instances, join_servers their join
    ports; the agent asks one, and the next when it cannot be reached (high availability).
    service_account_token_file: in a Kubernetes pod, its projected token (the first certificate
    without a join token, reviewed by the API server)."""

    def __init__(self, servers: list[tuple[str, int]], join_servers: list[tuple[str, int]], proxy: str, certs_dir: str, roots: bytes,
                 join_token_file: str | None = None, validity: datetime.timedelta | None = None,
                 service_account_token_file: str | None = None, trust_domain: str = "cluster.local",
                 marathon_task_id: str | None = None, identity: str | None = None, join_grace: float = 0.0,
                 roots_file: str | None = None):
        if not servers or not join_servers:
            raise ValueError("the agent needs at least one CSR server and one join server")
        self.servers, self.join_servers, self.proxy, self.certs_dir = list(servers), list(join_servers), proxy, certs_dir
        self.roots, self.join_token_file, self.validity = roots, join_token_file, validity
        # In a pod: its projected service-account token proves its identity (the kubelet renews the file).
        self.service_account_token_file, self.trust_domain = service_account_token_file, trust_domain
        # In a Marathon task: its task id ($MESOS_TASK_ID), which the control plane checks with
        # Marathon, and the identity the mesh gives it (asked for; the control plane decides).
        self.marathon_task_id, self.identity = marathon_task_id, identity
        # A task starts before the control plane has seen it: refusals are retried this long.
        self.join_grace = join_grace
        # roots_file (--ca): read again for each certificate, so a rotation's new bundle is written with it.
        self.roots_file = roots_file
        self.issued = 0
        self._turn = 0  # which instance to ask: moves on when one cannot be reached
        self._renewal_asked = threading.Event()

    def renew_now(self) -> None:
        """Renew at once, whatever the certificate's age (SIGHUP); asked until a renewal succeeds."""
        self._renewal_asked.set()

    def read_roots(self) -> bytes:
        """The trust bundle to check the control plane by and to write beside the certificate: the
        --ca file as it is now; the last one read while it cannot be read."""
        if self.roots_file is None:
            return self.roots
        try:
            with open(self.roots_file, "rb") as handle:
                roots = handle.read()
            x509.load_pem_x509_certificates(roots)
        except (OSError, ValueError) as error:
            LOG.warning("proxy %s: cannot read the trust bundle %s (%s); keeping the one read before", self.proxy, self.roots_file, error)
            return self.roots
        if roots != self.roots:
            LOG.info("proxy %s: the trust bundle %s changed (%d root(s))", self.proxy, self.roots_file, roots.count(b"BEGIN CERTIFICATE"))
        self.roots = roots
        return roots

    def _target(self, held: "Held | None") -> tuple[str, int]:
        servers = self.servers if held is not None else self.join_servers
        return servers[self._turn % len(servers)]

    def _now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)

    def current(self) -> Held | None:
        held = held_certificate(self.certs_dir)
        return held if held is not None and held.expires > self._now() else None

    def _join_token(self) -> tuple[str, str]:
        """(token, SPIFFE ID) from the join token file `meshwright join-token` wrote."""
        if not self.join_token_file:
            raise AgentError(f"no valid certificate in {self.certs_dir} and no --join-token-file: the first certificate needs a join token "
                             "(`meshwright join-token --proxy ...` on the control plane's host)")
        try:
            with open(self.join_token_file) as handle:
                record = json.load(handle)
        except OSError as error:
            raise AgentError(f"--join-token-file {self.join_token_file}: cannot read it: {error.strerror or error}") from None
        except ValueError as error:
            raise AgentError(f"--join-token-file {self.join_token_file}: not what `meshwright join-token` writes (JSON): {error}") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("proxy", "spiffe_id", "token")):
            raise AgentError(f"--join-token-file {self.join_token_file}: needs proxy, spiffe_id and token (what `meshwright join-token` writes)")
        if record["proxy"] != self.proxy:
            raise AgentError(f"--join-token-file {self.join_token_file}: the token is for proxy {record['proxy']}, not {self.proxy}")
        return record["token"], record["spiffe_id"]

    def _service_account_token(self) -> tuple[str, str]:
        """(token, SPIFFE ID of its service account) from the projected token file. The token's
        claims are read, not verified: the control plane has the API server review it."""
        path = self.service_account_token_file
        try:
            with open(path) as handle:
                token = handle.read().strip()
        except OSError as error:
            raise AgentError(f"--service-account-token-file {path}: cannot read it: {error.strerror or error}") from None
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            account = claims["kubernetes.io"]
            namespace, name = account["namespace"], account["serviceaccount"]["name"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise AgentError(f"--service-account-token-file {path}: not a Kubernetes service-account token (a JWT with kubernetes.io claims)") from None
        return token, spiffe_id(self.trust_domain, namespace, name)

    def _channel(self, held: Held | None) -> grpc.Channel:
        """mTLS with the current certificate to the CSR port, or server TLS only to the join port."""
        if held is not None:
            credentials = grpc.ssl_channel_credentials(self.roots, held.key, held.chain)
        else:
            credentials = grpc.ssl_channel_credentials(self.roots)
        host, port = self._target(held)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return grpc.secure_channel(target, credentials, options=(("grpc.ssl_target_name_override", CA_SERVER_NAME),))

    def request_certificate(self, held: Held | None) -> Held:
        """A new key, its CSR signed by the control plane, all three files written; the new certificate."""
        token_field = "join_token"
        if held is not None:
            names = x509.load_pem_x509_certificate(held.chain).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            token, spiffe = None, names.get_values_for_type(x509.UniformResourceIdentifier)[0]
        elif self.service_account_token_file:
            (token, spiffe), token_field = self._service_account_token(), "kubernetes_token"
        elif self.marathon_task_id:
            token, spiffe, token_field = self.marathon_task_id, self.identity, "marathon_task_id"
        else:
            token, spiffe = self._join_token()
        started = time.monotonic()
        self.read_roots()
        key = make_private_key()
        body = {"proxy": self.proxy, "csr": make_csr(key, spiffe).decode()}
        if self.validity is not None:
            body["validity_seconds"] = int(self.validity.total_seconds())
        if token is not None:
            body[token_field] = token
        with self._channel(held) as channel:
            answer = channel.unary_unary(PATH)(json.dumps(body).encode(), timeout=CALL_TIMEOUT)
        chain = "".join(json.loads(answer)["cert_chain"]).encode()
        write_secret_files(self.certs_dir)  # first: Envoy may start once the certificate is there
        write_workload_certificates(self.certs_dir, key, chain, self.roots)
        new = held_certificate(self.certs_dir)
        LOG.info("proxy %s: %s certificate for %s in %.3f s, valid until %s, renewing at %s", self.proxy, "renewed" if held else "first",
                 spiffe, time.monotonic() - started, new.expires.isoformat(), new.renew_at().isoformat())
        return new

    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        """Wait until the renewal time, a stop or a renewal asked for, whichever comes first."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and not self._renewal_asked.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(left, SLEEP_SLICE))

    def run(self, stop: threading.Event) -> None:
        """Keep a valid certificate in the certs directory until stop is set; AgentError when it cannot."""
        backoff, failed = FIRST_BACKOFF, 0
        started = time.monotonic()
        write_secret_files(self.certs_dir)  # a certificate from before the agent wrote them renews later
        while not stop.is_set():
            held = self.current()
            if held is not None and not self._renewal_asked.is_set():
                wait = (held.renew_at() - self._now()).total_seconds()
                if wait > 0:
                    self._sleep(stop, wait)
                    continue
            try:
                self.request_certificate(held)
                self.issued += 1
                self._renewal_asked.clear()
                backoff, failed = FIRST_BACKOFF, 0
            except grpc.RpcError as error:
                if error.code() in FINAL and held is None and time.monotonic() - started >= self.join_grace:
                    raise AgentError(f"the control plane refused the first certificate of proxy {self.proxy}: {error.details()}") from None
                host, port = self._target(held)
                self._turn += 1
                failed += 1
                instances = len(self.servers if held is not None else self.join_servers)
                if failed % instances:  # another instance has not been asked yet: ask it now
                    LOG.warning("proxy %s: no certificate from %s:%d (%s: %s); asking %s:%d", self.proxy, host, port,
                                error.code().name, error.details(), *self._target(held))
                    continue
                LOG.warning("proxy %s: no certificate from %s:%d (%s: %s); trying again in %.1f s", self.proxy, host, port,
                            error.code().name, error.details(), backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
