"""The admission webhooks' serving certificate from the mesh CA, as istiod issues its own: the
control plane makes the key (it never leaves the process), signs the certificate with the
intermediate its CSR service holds, for the names the API server calls the webhook by (DNS
names such as the webhook Service's `meshwright-webhook.meshwright-system.svc`, or IP
addresses), and renews it at two thirds of its life. The webhook configurations' caBundle is then
the mesh's roots (roles/kubernetes_mesh's default), which a root rotation keeps in step.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
import threading

from cryptography.hazmat.primitives.asymmetric import ec

from meshwright.pki.ca import Authority, private_key_pem
from meshwright.pki.workload import sign_serving_certificate

LOG = logging.getLogger("meshwright.serve")


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class IssuedWebhookCertificate:
    """An SSLContext whose certificate serve issued itself and keeps renewed."""

    def __init__(self, issuer: Authority, names: list[str], lifetime: datetime.timedelta):
        self.issuer, self.names, self.lifetime = issuer, names, lifetime
        self.context = server_context()
        self.chain = b""
        self._stop = threading.Event()
        self.issue()

    def issue(self) -> None:
        """A new key and certificate; new handshakes use them (the context is shared by the server's socket)."""
        key = ec.generate_private_key(ec.SECP256R1())
        self.chain = sign_serving_certificate(key.public_key(), self.names, self.issuer, self.lifetime)
        with tempfile.TemporaryDirectory(prefix="meshwright-webhook-") as folder:  # load_cert_chain reads files only
            chain_file, key_file = os.path.join(folder, "chain.pem"), os.path.join(folder, "key.pem")
            with open(chain_file, "wb") as handle:
                handle.write(self.chain)
            with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                handle.write(private_key_pem(key))
            self.context.load_cert_chain(chain_file, key_file)
        LOG.info("webhook serving certificate issued by the mesh CA for %s (%s)", ", ".join(self.names), self.lifetime)

    def start(self) -> None:
        threading.Thread(target=self._renew, name="webhook-certificate", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _renew(self) -> None:
        while not self._stop.wait(self.lifetime.total_seconds() * 2 / 3):
            try:
                self.issue()
            except (ValueError, OSError, ssl.SSLError) as error:  # the intermediate expired: keep the current one, say why
                LOG.warning("webhook serving certificate not renewed: %s", error)
