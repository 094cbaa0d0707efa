"""Keys the CA certifies without holding their private half: a CSR's, or a certificate's.

The result is a ``ClientKey`` whose ``private_key_pem`` is ``""``, so the certificate template
issues for it exactly as for a generated key. Which sizes are allowed is not decided here: this
module only says what the key is.
"""

from asn1crypto import keys, x509

from hsm.client_keys import ClientKey

# Named curves by their size in bits; other curves and explicit parameters are not certified.
CURVE_BITS = {"secp224r1": 224, "secp256r1": 256, "secp384r1": 384, "secp521r1": 521}


class UnsupportedKey(ValueError):
    """The key is neither RSA (rsaEncryption) nor EC on one of the named curves above."""


def public_key_only(public_key_info: bytes | keys.PublicKeyInfo) -> ClientKey:
    """The key of a SubjectPublicKeyInfo (DER) as a ``ClientKey`` with no private key."""
    try:
        info = (public_key_info if isinstance(public_key_info, keys.PublicKeyInfo)
                else keys.PublicKeyInfo.load(public_key_info, strict=True))
        algorithm = info.algorithm
    except (ValueError, TypeError, KeyError) as exc:
        raise UnsupportedKey("not a SubjectPublicKeyInfo") from exc
    if algorithm == "rsa":
        try:
            bits = info["public_key"].parsed["modulus"].native.bit_length()
        except (ValueError, TypeError) as exc:
            raise UnsupportedKey("malformed RSA public key") from exc
        return ClientKey("rsa", bits, "", info.dump())
    if algorithm == "ec":
        try:
            kind, curve = info.curve
        except (ValueError, TypeError, KeyError) as exc:
            raise UnsupportedKey("malformed EC parameters") from exc
        bits = CURVE_BITS.get(curve) if kind == "named" else None
        if bits is None:
            raise UnsupportedKey("unsupported EC curve")
        return ClientKey("ec", bits, "", info.dump())
    raise UnsupportedKey(f"unsupported key algorithm {algorithm}")


def certificate_key(certificate_der: bytes) -> ClientKey:
    """The subject key of a DER certificate, to certify it again (renew of a CSR certificate)."""
    certificate = x509.Certificate.load(certificate_der)
    return public_key_only(certificate["tbs_certificate"]["subject_public_key_info"])
