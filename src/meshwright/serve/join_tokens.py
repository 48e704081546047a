"""One-time join tokens: how a proxy with no certificate yet gets its first one from the
control plane's CSR service (docs/control-plane.md, "First join").

A token is a random secret bound to one proxy, with an expiry. `meshwright join-token` (run
by the Ansible side on the control plane's host) writes it to the tokens directory that
`meshwright serve --join-tokens` reads, and prints the secret once: the directory holds only
its SHA-256 (`<sha256>.json`), so reading the directory does not give a usable token. Who
may write the directory may issue tokens: the same user that may read the intermediate's key.
There is no network API to issue tokens, hence no admin secret to guard.

Redeeming renames `<sha256>.json` to `<sha256>.used`: a rename succeeds once, so a token
signs one CSR even when two requests race, or two instances share the directory (HA).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time

TOKEN_BYTES = 32
ISSUED, USED = ".json", ".used"


class TokenRefused(Exception):
    """A join token that signs nothing; the message says why (without the secret)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def issue_token(tokens_dir: str, proxy_id: str, ttl_seconds: float, now: float | None = None) -> str:
    """A new token for proxy_id, valid ttl_seconds; only its digest is written (0600, by rename)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    os.makedirs(tokens_dir, mode=0o700, exist_ok=True)
    record = json.dumps({"proxy": proxy_id, "expires": (now or time.time()) + ttl_seconds}, sort_keys=True)
    path = os.path.join(tokens_dir, token_digest(token) + ISSUED)
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(record)
    os.replace(temporary, path)
    return token


class JoinTokens:
    """The tokens directory as the CSR service reads it."""

    def __init__(self, tokens_dir: str):
        self.tokens_dir = tokens_dir

    def _path(self, digest: str, suffix: str) -> str:
        return os.path.join(self.tokens_dir, digest + suffix)

    def check(self, token: str, proxy_id: str, now: float | None = None) -> str:
        """The token's digest when it is issued, unused, unexpired and bound to proxy_id; TokenRefused otherwise."""
        digest = token_digest(token)
        try:
            with open(self._path(digest, ISSUED)) as handle:
                record = json.load(handle)
        except FileNotFoundError:
            if os.path.exists(self._path(digest, USED)):
                raise TokenRefused(f"join token {digest[:12]} was already used (a token signs one CSR: issue a new one)") from None
            raise TokenRefused("unknown join token (never issued, or removed)") from None
        except (OSError, ValueError) as error:
            raise TokenRefused(f"join token {digest[:12]}: unreadable record: {error}") from None
        expires = float(record.get("expires", 0))
        if (now or time.time()) >= expires:
            raise TokenRefused(f"join token {digest[:12]} expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))} (issue a new one)")
        if record.get("proxy") != proxy_id:
            raise TokenRefused(f"join token {digest[:12]} was issued for proxy {record.get('proxy')}, not {proxy_id}")
        return digest

    def redeem(self, token: str, proxy_id: str, now: float | None = None) -> None:
        """Use the token up (check, then the rename only one caller wins); TokenRefused when it does not sign."""
        digest = self.check(token, proxy_id, now)
        try:
            os.rename(self._path(digest, ISSUED), self._path(digest, USED))
        except FileNotFoundError:
            raise TokenRefused(f"join token {digest[:12]} was already used (a token signs one CSR: issue a new one)") from None
