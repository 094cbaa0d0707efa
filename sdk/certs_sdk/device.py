"""The device side: enroll a thing, keep its credentials, renew them before they expire.

Two ways to enroll, chosen by `use_csr`:

- `use_csr=False` (the default): the user's client issues a
  certificate with a server-generated key (`POST /certs`), and the device fetches it once with
  its thing key (`GET /certs/{serial}/download`). Renewal is `POST /certs/{serial}/rotate` and
  a download of the new record.
- `use_csr=True` (SPEC section 3, "Device-held keys"; recommended): the
  device generates its key, builds a PKCS#10 request and sends it with `POST /certs`; the key
  never leaves the device. Renewal rotates with a CSR of a fresh key. A service that ignores
  the `csr` field answers with a key of its own: on enroll that certificate is revoked again,
  on renew it is kept as the new credentials (the old one is revoked by then), and
  CsrNotSupported is raised in both cases. Switching to EST (SPEC section 12) later replaces
  `_enroll_csr` only.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from certs_sdk import files, keys
from certs_sdk._calls import Ttl
from certs_sdk.client import CertsClient
from certs_sdk.errors import CertsError
from certs_sdk.models import Certificate

DEFAULT_RENEW_AT = 1 / 3  # renew when a third of the lifetime is left, as the rotation loop


class CsrNotSupported(CertsError):
    """The service issued a key of its own instead of certifying the device's CSR."""


class Device:
    """One thing's credentials. `client` carries the user token that may edit the thing;
    `thing_key` is the device's own key (`external=True` for an external key)."""

    def __init__(self, client: CertsClient, thing_id: str, thing_key: str, *,
                 external: bool = False, key_type: str = "ec", key_bits: int | None = None,
                 ttl: Ttl | None = None, renew_at: float = DEFAULT_RENEW_AT,
                 use_csr: bool = False, credentials: Certificate | None = None) -> None:
        if not 0.0 < renew_at < 1.0:
            raise ValueError("renew_at is a fraction of the lifetime, between 0 and 1")
        self.client = client
        self.thing_id = thing_id
        self._thing_key = thing_key
        self.external = external
        self.key_type = keys.normalise_key_type(key_type)
        self.key_bits = key_bits or keys.default_bits(self.key_type)
        self.ttl = ttl
        self.renew_at = renew_at
        self.use_csr = use_csr
        self.credentials = credentials

    def enroll(self) -> Certificate:
        """First credentials of the device."""
        self.credentials = self._enroll_csr() if self.use_csr else self._enroll_download()
        return self.credentials

    def renew(self) -> Certificate:
        """New credentials now; the old certificate is revoked by the service."""
        current = self._current()
        if self.use_csr:
            key = keys.generate(self.key_type, self.key_bits)
            issued = self.client.rotate(current.serial, self.thing_id, key_type=self.key_type,
                                        key_bits=self.key_bits, ttl=self.ttl,
                                        csr=keys.csr_pem(key, self.thing_id))
            try:
                self.credentials = self._held(issued, key, revoke_on_mismatch=False)
            except CsrNotSupported:
                # The old certificate is revoked already: keep the service's key, still valid.
                self.credentials = issued
                raise
        else:
            issued = self.client.rotate(current.serial, self.thing_id, key_type=self.key_type,
                                        key_bits=self.key_bits, ttl=self.ttl)
            self.credentials = self._download(issued.serial)
        return self.credentials

    def due(self, now: datetime | None = None) -> bool:
        """Whether at most `renew_at` of the certificate's lifetime is left."""
        current = self._current()
        parsed = current.x509()
        lifetime = parsed.not_valid_after_utc - parsed.not_valid_before_utc
        left = parsed.not_valid_after_utc - (now or datetime.now(UTC))
        return left <= lifetime * self.renew_at

    def renew_if_due(self, now: datetime | None = None) -> Certificate | None:
        """Renew when `due`; the new credentials, or None when nothing was needed."""
        return self.renew() if self.due(now) else None

    def save(self, directory: Path | str) -> None:
        """cert.pem, key.pem (0600) and ca.pem in `directory`."""
        files.save(directory, self._current())

    def load(self, directory: Path | str) -> Certificate:
        """Credentials saved earlier (after a restart of the device)."""
        self.credentials = files.load(directory)
        return self.credentials

    def _current(self) -> Certificate:
        if self.credentials is None:
            raise RuntimeError("the device has no credentials yet: enroll() or load() first")
        return self.credentials

    def _download(self, serial: str) -> Certificate:
        return self.client.download(serial, self._thing_key, external=self.external)

    def _enroll_download(self) -> Certificate:
        issued = self.client.issue(self.thing_id, key_type=self.key_type,
                                   key_bits=self.key_bits, ttl=self.ttl)
        return self._download(issued.serial)

    def _enroll_csr(self) -> Certificate:
        key = keys.generate(self.key_type, self.key_bits)
        issued = self.client.issue(self.thing_id, key_type=self.key_type,
                                   key_bits=self.key_bits, ttl=self.ttl,
                                   csr=keys.csr_pem(key, self.thing_id))
        return self._held(issued, key, revoke_on_mismatch=True)

    def _held(self, issued: Certificate, key: keys.PrivateKey, *,
              revoke_on_mismatch: bool) -> Certificate:
        """The issued record with the device's own key, after checking it certifies that key."""
        if issued.private_key or not keys.same_public_key(issued.certificate, key):
            if revoke_on_mismatch:
                self.client.revoke(issued.serial)
            raise CsrNotSupported("the service ignored the CSR and generated a key itself",
                                  status=None)
        return dataclasses.replace(issued, private_key=keys.key_pem(key))
