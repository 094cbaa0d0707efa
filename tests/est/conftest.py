"""EST through real clients: `certs serve` behind a real nginx that terminates TLS, requests the
client certificate and forwards it in `X-SSL-Client-Cert` (`$ssl_client_escaped_cert`).

nginx connects to the service from 127.0.0.2 (`proxy_bind`), the only address the service
trusts (`MF_CERTS_TRUSTED_PROXIES=127.0.0.2/32`); a request made straight to the service comes
from 127.0.0.1, an untrusted address.

Fixture `est` (module): an `EstStack` with the service's and nginx's ports, the CA file, the
nginx server certificate (for `curl --cacert`) and `sh(script)`, which runs a bash script in a
work directory with `EST`, `SERVICE`, `CA`, `TLS_CA` in its environment.
"""

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.nginx import Nginx, start_nginx
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve

TRUSTED_PROXY = "127.0.0.2"
HEADER = "X-SSL-Client-Cert"
# optional_no_ca: nginx asks for a client certificate and forwards whatever it gets, so that the
# service answers a certificate of another CA or an expired one with its own 403.
NGINX_EST = """
    server {
        listen 127.0.0.1:@PORT@ ssl;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_client_certificate @CA@;
        ssl_verify_client optional_no_ca;
        location /.well-known/est/ {
            proxy_pass http://127.0.0.1:@UPSTREAM@;
            proxy_bind @BIND@;
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }
    }
"""


@dataclass
class EstStack:
    served: Served
    nginx: Nginx
    workdir: Path
    tls_ca: Path

    @property
    def ca(self) -> Path:
        return self.served.signing_ca

    @property
    def est_url(self) -> str:
        return f"https://127.0.0.1:{self.nginx.port}/.well-known/est"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def sh(self, script: str, *, check: bool = True, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
        """``script`` under ``bash -euo pipefail`` in the work directory, ``env`` added to its
        environment."""
        variables = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "EST": self.est_url,
                     "SERVICE": self.service_url, "CA": str(self.ca),
                     "TLS_CA": str(self.tls_ca), **(env or {})}
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.workdir,
                              env=variables, capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, (
                f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
                f"--- nginx\n{self.nginx.error_log[-2000:]}\n"
                f"--- service\n{self.served.output()[-3000:]}")
        return done

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.service_url, timeout=30)


def tls_server_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for nginx's 127.0.0.1 (not from the service's CA)."""
    cert, key = folder / "nginx.crt", folder / "nginx.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory, identity: IdentityFixture
        ) -> Iterator[EstStack]:
    root = tmp_path_factory.mktemp("est")
    env = serve_env(root, identity, workers=1, extra={
        "MF_CERTS_TRUSTED_PROXIES": f"{TRUSTED_PROXY}/32",
        "MF_CERTS_CLIENT_CERT_HEADER": HEADER,
        "MF_CERTS_LOG_LEVEL": "info",
    })
    served = start_serve(env, root)
    try:
        cert, key = tls_server_certificate(root)
        nginx = start_nginx(root / "nginx", NGINX_EST, CERT=str(cert), KEY=str(key),
                            CA=str(served.signing_ca), UPSTREAM=str(served.port),
                            BIND=TRUSTED_PROXY)
        try:
            workdir = root / "device"
            workdir.mkdir()
            yield EstStack(served, nginx, workdir, cert)
        finally:
            nginx.stop()
    finally:
        stop_serve(served.process)
