"""A real nginx as the gateway in front of devices (SPEC 13): with ``ssl_verify_client on``
and ``ssl_ocsp on`` pointed at the service it lets a device's certificate through and refuses
the same handshake right after the certificate is revoked, with no reload; with ``ssl_crl``
on MF_CERTS_CRL_PATH it refuses it after a reload."""

import signal
import subprocess
import time
from pathlib import Path

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.nginx import Nginx, start_nginx
from tests.ocsp.conftest import OcspSetup
from tests.ocsp.helpers import Device, issue, openssl, revoke

_GATEWAY = """
    server {
        listen 127.0.0.1:@PORT@ ssl;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_client_certificate @CA@;
        ssl_verify_client on;
        ssl_verify_depth 2;
        @CHECK@
        location / { return 200 "device $ssl_client_serial\\n"; }
    }
"""
# nginx keeps no OCSP answer unless ssl_ocsp_cache names a cache (the default is off).
OCSP_CHECK = "ssl_ocsp on; ssl_ocsp_responder @OCSP@;"
CRL_CHECK = "ssl_crl @CRL@;"


def _server_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "gateway.pem", folder / "gateway.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=gateway", "-days", "1",
            "-addext", "subjectAltName=IP:127.0.0.1")
    return cert, key


def _gateway(service: OcspSetup, folder: Path, check: str) -> tuple[Nginx, Path]:
    cert, key = _server_certificate(folder)
    proxy = start_nginx(folder / "nginx", _GATEWAY.replace("@CHECK@", check), CERT=str(cert),
                        KEY=str(key), CA=str(service.ca), OCSP=service.ocsp_url,
                        CRL=service.env["MF_CERTS_CRL_PATH"])
    return proxy, cert


def _status(proxy: Nginx, trust: Path, device: Device) -> int:
    """The HTTP status curl gets through the gateway with the device's certificate."""
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(trust),
         "--cert", str(device.cert), "--key", str(device.key), "--max-time", "20",
         f"https://127.0.0.1:{proxy.port}/"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def _device(service: OcspSetup, identity: IdentityFixture, name: str) -> Device:
    return issue(service.base_url, identity.alice.token, identity.thing_a1.id,
                 service.folder / "gateway-devices", name)


def test_ocsp_gateway_refuses_a_revoked_device_at_once(
        service: OcspSetup, identity: IdentityFixture, tmp_path: Path) -> None:
    proxy, trust = _gateway(service, tmp_path, OCSP_CHECK)
    try:
        device, other = _device(service, identity, "ocsp"), _device(service, identity, "other")
        assert _status(proxy, trust, device) == 200
        assert _status(proxy, trust, device) == 200  # asked again: nothing cached either way
        revoke(service.base_url, identity.alice.token, device.serial)
        # The very next handshake, no reload, no wait.
        assert _status(proxy, trust, device) == 400
        # nginx's own verdict on the OCSP answer (no CRL is configured here).
        assert "client SSL certificate verify error: certificate revoked" in proxy.error_log
        assert _status(proxy, trust, other) == 200  # only that device lost access
    finally:
        proxy.stop()


def test_crl_gateway_refuses_a_revoked_device_after_a_reload(
        service: OcspSetup, identity: IdentityFixture, tmp_path: Path) -> None:
    device, other = _device(service, identity, "crl"), _device(service, identity, "kept")
    proxy, trust = _gateway(service, tmp_path, CRL_CHECK)
    try:
        assert _status(proxy, trust, device) == 200
        revoke(service.base_url, identity.alice.token, device.serial)
        # The CRL file was rewritten before the DELETE answered, but nginx reads it only when
        # it loads its configuration.
        assert _status(proxy, trust, device) == 200
        proxy.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        status = _status(proxy, trust, device)
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.2)  # the old worker may still take the connection for a moment
            status = _status(proxy, trust, device)
        assert status == 400
        assert "verify error: (23:certificate revoked)" in proxy.error_log
        assert _status(proxy, trust, other) == 200
    finally:
        proxy.stop()

