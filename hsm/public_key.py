"""Keys the CA certifies without holding their private half: a CSR's, or a certificate's.

The result is a ``ClientKey`` whose ``private_key_pem`` is ``""``, so the certificate template
issues for it exactly as for a generated key. Which sizes are allowed is not decided here: this
module only says what the key is.
"""

from asn1crypto import core, keys, x509

from hsm.client_keys import ClientKey
from hsm.der_walk import BIT_STRING, INTEGER, SEQUENCE, Element, children, encoding, expect, one

# Named curves by their size in bits; other curves and explicit parameters are not certified.
CURVE_BITS = {"secp224r1": 224, "secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
# The AlgorithmIdentifier DER of each key this CA certifies (RFC 3279, RFC 5480):
# rsaEncryption with NULL parameters (or none, as some encoders write it), id-ecPublicKey
# with a named curve.
_ALGORITHMS: dict[bytes, tuple[str, int]] = {
    keys.PublicKeyAlgorithm({"algorithm": "rsa", "parameters": core.Null()}).dump(): ("rsa", 0),
    bytes.fromhex("300b06092a864886f70d010101"): ("rsa", 0),
    **{
        keys.PublicKeyAlgorithm({
            "algorithm": "ec",
            "parameters": keys.ECDomainParameters(name="named", value=curve),
        }).dump(): ("ec", bits)
        for curve, bits in CURVE_BITS.items()
    },
}


class UnsupportedKey(ValueError):
    """The key is neither RSA (rsaEncryption) nor EC on one of the named curves above."""


def public_key_only(public_key_info: bytes) -> ClientKey:
    """The key of a DER SubjectPublicKeyInfo as a ``ClientKey`` with no private key."""
    try:
        algorithm, key = _pair(one(public_key_info, SEQUENCE))
        known = _ALGORITHMS.get(encoding(algorithm))
        if known is None:
            raise UnsupportedKey(f"unsupported key algorithm {_describe(algorithm)}")
        key_type, bits = known
        bits_string = expect(key, BIT_STRING)
        if not bits_string or bits_string[0] != 0:
            raise ValueError("malformed subjectPublicKey")
        if key_type == "rsa":
            modulus, _ = _pair(one(bits_string[1:], SEQUENCE))
            bits = int.from_bytes(expect(modulus, INTEGER), "big", signed=True).bit_length()
    except UnsupportedKey:
        raise
    except (ValueError, TypeError) as exc:
        raise UnsupportedKey("not a SubjectPublicKeyInfo") from exc
    return ClientKey(key_type, bits, "", public_key_info)


def certificate_key(certificate_der: bytes) -> ClientKey:
    """The subject key of a DER certificate, to certify it again (renew of a CSR certificate)."""
    certificate = x509.Certificate.load(certificate_der)
    return public_key_only(certificate["tbs_certificate"]["subject_public_key_info"].dump())


def _pair(contents: bytes) -> tuple[Element, Element]:
    found = children(contents)
    if len(found) != 2:
        raise ValueError("two values expected")
    return found[0], found[1]


def _describe(algorithm: Element) -> str:
    """The key algorithm's name (and the curve's, for EC) for an error message."""
    try:
        identifier = keys.PublicKeyAlgorithm.load(encoding(algorithm))
        name = str(identifier["algorithm"].native)
        if name == "ec":
            parameters = identifier["parameters"]
            return f"EC curve {parameters.chosen.native}" if parameters.name == "named" \
                else "EC with explicit parameters"
        return name
    except (ValueError, TypeError, KeyError):
        return "(unreadable)"
