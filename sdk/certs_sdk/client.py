"""The synchronous client: one method per route of SPEC section 3."""

from __future__ import annotations

import time
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import httpx

from certs_sdk import _calls
from certs_sdk._calls import Call, Ttl
from certs_sdk._transport import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    Verify,
    client_options,
    failure,
    request_options,
    retry_event,
)
from certs_sdk.models import Certificate, CertificatePage, Health, Revocation, SerialPage
from certs_sdk.retry import RetryHook, RetryPolicy

T = TypeVar("T")


class CertsClient:
    """A client of one certs service. `token` is the user's token (Bearer) for the user routes;
    the device's thing key is given to `download` itself. `http_client` replaces the httpx
    client the SDK would build (proxies, custom transports); `url`, `timeout`, `verify` and
    `cert` are then ignored."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, verify: Verify = True,
                 cert: str | tuple[str, str] | None = None,
                 on_retry: RetryHook | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self.token = token
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._http = http_client or httpx.Client(**client_options(url, timeout, verify, cert))

    def __enter__(self) -> CertsClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one route's request, retrying as `self.retry` allows (see certs_sdk.retry)."""
        attempt = 1
        while True:
            response: httpx.Response | None = None
            error: httpx.TransportError | None = None
            try:
                response = self._http.request(call.method, call.path, **request_options(call))
            except httpx.TransportError as exc:
                error = exc
            event = retry_event(call, self.retry, attempt, response, error)
            if event is None:
                if error is not None:
                    raise failure(error, attempt) from None
                assert response is not None
                return call.read(response, attempt)
            if self.on_retry is not None:
                self.on_retry(event)
            time.sleep(event.delay)
            attempt += 1

    def issue(self, thing_id: str, *, key_type: str | None = None, key_bits: int | None = None,
              ttl: Ttl | None = None, csr: str | None = None) -> Certificate:
        """`POST /certs`: a new certificate (and key, unless `csr` is given). Never retried."""
        body = _calls.issue_body(thing_id, key_type, key_bits, ttl, csr)
        return self.send(_calls.issue(self.token, body))

    def view(self, serial: str) -> Certificate:
        """`GET /certs/{serial}`: the record, without its private key (`private_key` None)."""
        return self.send(_calls.view(self.token, serial))

    def renew(self, serial: str) -> Certificate:
        """`PUT /certs/{serial}`: allowed close to expiry only. Never retried."""
        return self.send(_calls.renew(self.token, serial))

    def rotate(self, serial: str, thing_id: str, *, key_type: str | None = None,
               key_bits: int | None = None, ttl: Ttl | None = None,
               csr: str | None = None) -> Certificate:
        """`POST /certs/{serial}/rotate`: a new certificate now, the old one revoked."""
        body = _calls.issue_body(thing_id, key_type, key_bits, ttl, csr)
        return self.send(_calls.rotate(self.token, serial, body))

    def revoke(self, serial: str) -> Revocation:
        """`DELETE /certs/{serial}`. Retried on 503; a NotFound with `attempts > 1` may mean a
        503 from a proxy hid a revocation that did happen."""
        return self.send(_calls.revoke(self.token, serial))

    def download(self, serial: str, thing_key: str, *, external: bool = False) -> Certificate:
        """`GET /certs/{serial}/download` with the device's key (`Thing` or `External`)."""
        return self.send(_calls.download(thing_key, serial, external))

    def list_serials(self, thing_id: str, *, offset: int | None = None,
                     limit: int | None = None, serial: str | None = None,
                     expires_from: datetime | None = None,
                     expires_to: datetime | None = None) -> SerialPage:
        """`GET /things/{thing_id}/serials`."""
        params = _calls.list_params(offset, limit, serial, expires_from, expires_to)
        return self.send(_calls.list_serials(self.token, thing_id, params))

    def list_certs(self, thing_id: str, *, offset: int | None = None, limit: int | None = None,
                   serial: str | None = None, expires_from: datetime | None = None,
                   expires_to: datetime | None = None) -> CertificatePage:
        """`GET /things/{thing_id}/certs`: view bodies."""
        params = _calls.list_params(offset, limit, serial, expires_from, expires_to)
        return self.send(_calls.list_certs(self.token, thing_id, params))

    def crl_der(self) -> bytes:
        """`GET /crl`: the current CRL, DER."""
        return self.send(_calls.crl_der())

    def crl_pem(self) -> str:
        """`GET /crl.pem`: the current CRL, PEM."""
        return self.send(_calls.crl_pem())

    def ca_pem(self) -> str:
        """`GET /ca.pem`: the CA chain, PEM, issuing CA first."""
        return self.send(_calls.ca_pem())

    def health(self) -> Health:
        """`GET /health`; a 503 is returned as `Health(ok=False, ...)`, not raised."""
        return self.send(_calls.health())
