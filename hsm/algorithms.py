"""Signature schemes of the CA key: the AlgorithmIdentifier, the hash and the PKCS#11 call.

The digest is always computed here and the token signs only the digest (``CKM_RSA_PKCS`` over a
DigestInfo, ``CKM_ECDSA`` over the hash): every PKCS#11 implementation offers these two, large
CRLs do not cross the PKCS#11 boundary, and no result depends on which combined mechanisms a
token happens to support.
"""

import hashlib
from dataclasses import dataclass

from asn1crypto import algos, core, keys
from pkcs11 import Mechanism, MechanismFlag

from hsm import der
from hsm.capabilities import Capabilities

# DigestInfo prefixes (RFC 8017, section 9.2, note 1).
_DIGEST_INFO_PREFIX = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_EC_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


@dataclass(frozen=True)
class SignatureScheme:
    """How one CA key signs: algorithm identifier DER, digest, mechanism, signature encoding."""

    name: str
    algorithm_identifier: bytes
    hash_name: str
    mechanism: Mechanism
    key_bits: int = 0

    def require(self, capabilities: Capabilities) -> None:
        """MissingCapability unless the token signs with this scheme's mechanism and key size."""
        kind = "RSA" if self.mechanism == Mechanism.RSA_PKCS else "EC"
        capabilities.require(self.mechanism, MechanismFlag.SIGN,
                             f"signing with the {kind}-{self.key_bits} CA key",
                             self.key_bits or None)

    def to_be_signed(self, message: bytes) -> bytes:
        """What the token is given for ``message``: a DigestInfo (RSA) or the bare digest (EC)."""
        digest = hashlib.new(self.hash_name, message).digest()
        if self.mechanism == Mechanism.RSA_PKCS:
            return _DIGEST_INFO_PREFIX[self.hash_name] + digest
        return digest

    def signature_value(self, token_output: bytes) -> bytes:
        """The token's output as X.509 wants it (ECDSA r||s becomes a DER SEQUENCE)."""
        if self.mechanism == Mechanism.ECDSA:
            return der.ecdsa_signature(token_output)
        return token_output


def scheme_for(public_key: keys.PublicKeyInfo) -> SignatureScheme:
    """The signature scheme for a CA public key: SHA-256 for RSA, the curve's hash for EC."""
    if public_key.algorithm == "rsa":
        identifier = algos.SignedDigestAlgorithm(
            {"algorithm": "sha256_rsa", "parameters": core.Null()}
        )
        bits = int(public_key["public_key"].parsed["modulus"].native).bit_length()
        return SignatureScheme("sha256_rsa", identifier.dump(), "sha256", Mechanism.RSA_PKCS,
                               bits)
    if public_key.algorithm == "ec":
        curve = public_key.curve[1]
        hash_name = _EC_CURVE_HASH.get(curve)
        if hash_name is None:
            raise ValueError(f"unsupported CA curve {curve}")
        name = f"{hash_name}_ecdsa"
        identifier = algos.SignedDigestAlgorithm({"algorithm": name})
        return SignatureScheme(name, identifier.dump(), hash_name, Mechanism.ECDSA,
                               public_key.bit_size)
    raise ValueError(f"unsupported CA key algorithm {public_key.algorithm}")
