"""Client key pairs for things, generated with ``cryptography`` (they leave the CA by design)."""

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsm import der

# Which curve each EC size means; which sizes are allowed is the domain's policy
# (authority/key_policy.py).
EC_CURVES: dict[int, ec.EllipticCurve] = {
    224: ec.SECP224R1(), 256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1(),
}


@dataclass(frozen=True)
class ClientKey:
    """A fresh key pair: the private key as PEM (PKCS#1 or SEC1), the public key as SPKI DER."""

    key_type: str
    key_bits: int
    private_key_pem: str = field(repr=False)
    public_key_info: bytes

    @property
    def key_identifier(self) -> bytes:
        """RFC 5280 method 1: SHA-1 of the subjectPublicKey bits."""
        _, start, _ = der.read(self.public_key_info)
        _, _, algorithm_end = der.read(self.public_key_info, start)
        _, bits_start, bits_end = der.read(self.public_key_info, algorithm_end)
        return hashlib.sha1(self.public_key_info[bits_start + 1 : bits_end]).digest()


def generate_client_key(key_type: str, key_bits: int) -> ClientKey:
    """A new RSA or EC key of the given size; ValueError for an EC size with no curve here."""
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    elif key_type == "ec":
        curve = EC_CURVES.get(key_bits)
        if curve is None:
            raise ValueError("invalid key bits")
        private = ec.generate_private_key(curve)
    else:
        raise ValueError("unsupported key type")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ClientKey(key_type, key_bits, private_pem, public_der)
