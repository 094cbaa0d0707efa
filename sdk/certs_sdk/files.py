"""Writing credentials to disk: keys 0600, certificates 0644, each file replaced atomically."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from certs_sdk.models import Certificate

KEY_MODE = 0o600
CERT_MODE = 0o644


def write_file(path: Path | str, data: str | bytes, mode: int, *, exact: bool = False) -> Path:
    """Write `data` to a temporary file created with `mode` (less the umask, or exactly `mode`
    with `exact`), then rename it over `path`: the file never exists with wider permissions,
    nor half written."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    content = data.encode() if isinstance(data, str) else data
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if exact:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as output:
            output.write(content)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def write_key(path: Path | str, pem: str) -> Path:
    return write_file(path, pem, KEY_MODE, exact=True)


def write_certificate(path: Path | str, pem: str | bytes) -> Path:
    return write_file(path, pem, CERT_MODE)


CERT_FILE, KEY_FILE, CA_FILE = "cert.pem", "key.pem", "ca.pem"


def save(directory: Path | str, credentials: Certificate) -> None:
    """cert.pem, key.pem (0600, when the record has a key) and ca.pem in `directory`."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if credentials.private_key:
        write_key(folder / KEY_FILE, credentials.private_key)
    write_certificate(folder / CA_FILE, credentials.chain_pem())
    write_certificate(folder / CERT_FILE, credentials.certificate)


def load(directory: Path | str) -> Certificate:
    """Credentials written by `save`, read back into a Certificate (the thing id is the
    certificate's CN, as the service's default profile writes it)."""
    folder = Path(directory)
    certificate = (folder / CERT_FILE).read_text()
    key_path = folder / KEY_FILE
    private_key = key_path.read_text() if key_path.exists() else ""
    chain = (folder / CA_FILE).read_text()
    parsed = x509.load_pem_x509_certificate(certificate.encode())
    chain_pems = tuple(c.public_bytes(Encoding.PEM).decode()
                       for c in x509.load_pem_x509_certificates(chain.encode()))
    common_names = parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    kind, bits = _key_shape(parsed)
    return Certificate(
        serial=format(parsed.serial_number, "x"), thing_id=str(common_names[0].value),
        certificate=certificate, issuing_ca=chain_pems[0] if chain_pems else "",
        ca_chain=chain_pems, private_key=private_key, private_key_type=kind, key_bits=bits,
        expires_at=parsed.not_valid_after_utc, downloaded=True,
    )


def _key_shape(certificate: x509.Certificate) -> tuple[str, int]:
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa", public.key_size
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec", public.curve.key_size
    raise ValueError("certificate key is neither RSA nor EC")
