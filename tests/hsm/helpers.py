"""Second implementations the hsm tests check against: the openssl CLI and ``cryptography``.

Nothing here is mocked: certificates and CRLs are written to files and handed to ``openssl``,
and signatures are verified with ``cryptography`` using the CA certificate's public key.
"""

import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

REPO_ROOT = Path(__file__).resolve().parents[2]

# (key type, size) of the CA keys the profile and CRL tests cover. RSA-3072 is the one slow
# RSA size the brief allows; its key is generated once per session by the make_ca fixture.
CA_TYPES = [("rsa", 2048), ("ec", 256), ("ec", 384)]
CA_TYPES_WITH_RSA_3072 = [*CA_TYPES, ("rsa", 3072)]
CLIENT_TYPES = [("rsa", 2048), ("ec", 256), ("ec", 384), ("ec", 521), ("ec", 224)]


def assert_unreadable(key: Any, attribute: Any) -> None:
    """The token does not give out a secret attribute of ``key``.

    SoftHSM2 answers CKR_ATTRIBUTE_SENSITIVE, as PKCS#11 says. tpm2-pkcs11 keeps no such
    attribute for a TPM-held key (CKR_ATTRIBUTE_TYPE_INVALID, EC private values) or answers an
    empty value (AES/HMAC CKA_VALUE): the key is only ever inside the TPM. Any bytes fail.
    """
    from pkcs11 import exceptions as p11

    try:
        value = key[attribute]
    except (p11.AttributeSensitive, p11.AttributeTypeInvalid):
        return
    assert not value, f"the token returned {len(value)} bytes of {attribute}"


def type_id(value: tuple[str, int]) -> str:
    return f"{value[0]}{value[1]}"


def openssl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI; never raises on a non-zero exit (the caller asserts on it)."""
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def openssl_verify_client(ca_pem: Path, cert_pem: Path) -> subprocess.CompletedProcess[str]:
    return openssl("verify", "-CAfile", str(ca_pem), "-purpose", "sslclient", str(cert_pem))


def hash_for(public_key: Any) -> hashes.HashAlgorithm:
    """The hash a CA key of this type signs with (SPEC section 5)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return hashes.SHA256()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[
        public_key.curve.key_size
    ]


def verify_signature(public_key: Any, signature: bytes, message: bytes,
                     algorithm: hashes.HashAlgorithm | None = None) -> None:
    """Raise cryptography's InvalidSignature unless ``signature`` signs ``message``."""
    algorithm = algorithm or hash_for(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, padding.PKCS1v15(), algorithm)
    else:
        public_key.verify(signature, message, ec.ECDSA(algorithm))


def ca_public_key(ca_pem: str) -> Any:
    return x509.load_pem_x509_certificate(ca_pem.encode()).public_key()


# ---- subprocess scenarios ------------------------------------------------------------------


@dataclass
class ScenarioRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    out_dir: Path

    def describe(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-25:])
        return f"returncode={self.returncode}\nstderr tail:\n{tail}"


SCENARIO_BACKEND_VARIABLE = "CERTS_TEST_HSM_BACKEND"
_TOKEN_VARIABLES = ("SOFTHSM2_CONF", "TPM2_PKCS11_TCTI", "TPM2TOOLS_TCTI", "TPM2_PKCS11_STORE",
                    "DBUS_SESSION_BUS_ADDRESS")


def run_scenario(name: str, out_dir: Path, *args: str, timeout: float = 120,
                 backend: str = "softhsm") -> ScenarioRun:
    """Run ``tests/hsm/scenarios.py <name>`` in a fresh interpreter with its own token.

    The child makes its own token under ``out_dir`` (SoftHSM2: its own SOFTHSM2_CONF; tpm2:
    its own swtpm and resource manager), so a crash, a re-initialised library or a deleted
    token there cannot touch the session tokens of this pytest process.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _TOKEN_VARIABLES}
    env["PYTHONFAULTHANDLER"] = "1"
    env[SCENARIO_BACKEND_VARIABLE] = backend
    completed = subprocess.run(
        [sys.executable, "-m", "tests.hsm.scenarios", name, str(out_dir), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    result_file = out_dir / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return ScenarioRun(completed.returncode, completed.stdout, completed.stderr, result, out_dir)


SIGNATURE_RECORD = struct.Struct(">HIH")  # thread, sequence number, signature length


def pack_signature(thread: int, sequence: int, signature: bytes) -> bytes:
    return SIGNATURE_RECORD.pack(thread, sequence, len(signature)) + signature


def unpack_signatures(data: bytes) -> list[tuple[int, int, bytes]]:
    records = []
    offset = 0
    while offset < len(data):
        thread, sequence, size = SIGNATURE_RECORD.unpack_from(data, offset)
        offset += SIGNATURE_RECORD.size
        records.append((thread, sequence, data[offset : offset + size]))
        offset += size
    return records


def message_for(thread: int, sequence: int) -> bytes:
    """The message a scenario thread signs on its ``sequence``-th call (unique per call)."""
    return f"scenario message {thread}:{sequence}".encode()
