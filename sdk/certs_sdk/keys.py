"""Device-side keys: generate one in the policy of SPEC section 3, build its CSR."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(),
                                        521: ec.SECP521R1()}
RSA_BITS = (2048, 3072, 4096)


def normalise_key_type(key_type: str) -> str:
    kind = key_type.lower()
    if kind == "ecdsa":
        return "ec"
    if kind not in ("ec", "rsa"):
        raise ValueError(f"unsupported key type {key_type!r}")
    return kind


def default_bits(key_type: str) -> int:
    return 256 if normalise_key_type(key_type) == "ec" else 2048


def generate(key_type: str = "ec", key_bits: int | None = None) -> PrivateKey:
    """A new private key: EC P-256/P-384/P-521 or RSA 2048/3072/4096."""
    kind = normalise_key_type(key_type)
    bits = key_bits or default_bits(kind)
    if kind == "ec":
        if bits not in _CURVES:
            raise ValueError(f"unsupported EC size {bits}")
        return ec.generate_private_key(_CURVES[bits])
    if bits not in RSA_BITS:
        raise ValueError(f"unsupported RSA size {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key: PrivateKey) -> str:
    """The key as the service writes keys: PKCS#1 for RSA, SEC1 for EC, unencrypted."""
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def csr_pem(key: PrivateKey, thing_id: str) -> str:
    """A PKCS#10 request signed with `key` (the service ignores its subject; CN=thing_id is
    informative)."""
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing_id)]))
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def same_public_key(certificate_pem: str, key: PrivateKey) -> bool:
    """Whether the certificate certifies `key`'s public key."""
    certified = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return certified.public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt)
