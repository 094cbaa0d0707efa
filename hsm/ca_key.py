"""The CA key inside the token: generate it, import it once, read its public half, sign with it.

Private keys are created sensitive and never extractable, with only the signing capability.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any

import pkcs11
from asn1crypto import core, keys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from hsm.algorithms import SignatureScheme, scheme_for
from hsm.capabilities import MissingCapability
from hsm.connection import HsmConnection
from hsm.errors import CaMismatch, HsmError

CA_KEY_CHOICES = {
    ("rsa", 2048), ("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384),
}
_CURVES = {256: "secp256r1", 384: "secp384r1"}
_POINT_SIZES = {"secp256r1": 65, "secp384r1": 97, "secp521r1": 133}


# Attributes a CA key must have, and attributes that only narrow what it can be used for.
# Some modules refuse the second kind (tpm2-pkcs11: a TPM key always signs and decrypts, and
# CKA_DECRYPT=false fails the generation), so they are asked for when the module allows them.
_PRIVATE_NARROWING = (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE)
_PUBLIC_NARROWING = (Attribute.ENCRYPT, Attribute.WRAP)
# Generation is tried with all narrowing attributes, then without the encrypt/decrypt pair,
# then with none: the first that a module accepts is remembered for that module.
_NARROWING_LEVELS: tuple[tuple[tuple[Attribute, ...], tuple[Attribute, ...]], ...] = (
    (_PRIVATE_NARROWING, _PUBLIC_NARROWING),
    ((Attribute.UNWRAP, Attribute.DERIVE), (Attribute.WRAP,)),
    ((), ()),
)
_REFUSED_TEMPLATE = (
    p11.TemplateInconsistent, p11.TemplateIncomplete, p11.AttributeValueInvalid,
    p11.AttributeTypeInvalid, p11.AttributeReadOnly, p11.GeneralError,
)
_accepted_level: dict[str, int] = {}
_GENERATION = {"rsa": Mechanism.RSA_PKCS_KEY_PAIR_GEN, "ec": Mechanism.EC_KEY_PAIR_GEN}
log = logging.getLogger(__name__)


def _private_template(label: str, key_id: bytes,
                      narrowing: tuple[Attribute, ...] = _PRIVATE_NARROWING
                      ) -> dict[Attribute, object]:
    template: dict[Attribute, object] = {
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.LABEL: label,
        Attribute.ID: key_id,
    }
    for attribute in _PRIVATE_NARROWING:
        template[attribute] = False if attribute in narrowing else pkcs11.DEFAULT
    return template


def _public_template(label: str, key_id: bytes,
                     narrowing: tuple[Attribute, ...] = _PUBLIC_NARROWING
                     ) -> dict[Attribute, object]:
    template: dict[Attribute, object] = {
        Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True,
        Attribute.LABEL: label, Attribute.ID: key_id,
    }
    for attribute in _PUBLIC_NARROWING:
        template[attribute] = False if attribute in narrowing else pkcs11.DEFAULT
    return template


def _ec_params(curve: str) -> bytes:
    return keys.ECDomainParameters(name="named", value=curve).dump()


def generate_ca_key(
    connection: HsmConnection, label: str, key_type: str, size: int
) -> keys.PublicKeyInfo:
    """Generate the CA key pair inside the token; returns its public key.

    The module must offer the key generation and signing mechanisms for this key size
    (MissingCapability otherwise), and the key it makes must be sensitive and unextractable.
    """
    if (key_type, size) not in CA_KEY_CHOICES:
        raise ValueError(f"unsupported CA key {key_type}-{size}")
    need = f"a {key_type.upper()}-{size} CA key"
    capabilities = connection.capabilities
    capabilities.require(_GENERATION[key_type], MechanismFlag.GENERATE_KEY_PAIR, need, size)
    signing = Mechanism.RSA_PKCS if key_type == "rsa" else Mechanism.ECDSA
    capabilities.require(signing, MechanismFlag.SIGN, need, size)
    key_id = os.urandom(16)
    module = connection.config.module_path
    with connection.admin_session() as session:
        if _find(session, label, ObjectClass.PRIVATE_KEY) is not None:
            raise HsmError(f"the token already holds a key labelled {label!r}")
        first = _accepted_level.get(module, 0)
        for level in range(first, len(_NARROWING_LEVELS)):
            private_narrowing, public_narrowing = _NARROWING_LEVELS[level]
            public_template = _public_template(label, key_id, public_narrowing)
            private_template = _private_template(label, key_id, private_narrowing)
            try:
                public, private = _generate(session, key_type, size, label,
                                            public_template, private_template)
            except _REFUSED_TEMPLATE:
                if level == len(_NARROWING_LEVELS) - 1:
                    raise
                continue
            _accepted_level[module] = level
            break
        _check_protected(private, label)
        return _public_key_info(public)


def _generate(session: pkcs11.Session, key_type: str, size: int, label: str,
              public_template: dict[Attribute, object],
              private_template: dict[Attribute, object]) -> tuple[Any, Any]:
    if key_type == "rsa":
        return session.generate_keypair(
            KeyType.RSA, size, store=True, label=label,
            public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
            private_template=private_template,
        )
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: _ec_params(_CURVES[size])}, local=True
    )
    return params.generate_keypair(
        store=True, label=label, public_template=public_template,
        private_template=private_template,
    )


def _check_protected(private: Any, label: str) -> None:
    """Refuse (and destroy) a generated key the module did not make sensitive/unextractable;
    log which narrowing attributes the module left set."""
    if private[Attribute.SENSITIVE] is not True or private[Attribute.EXTRACTABLE] is not False:
        private.destroy()
        raise MissingCapability(
            f"the PKCS#11 module did not make the CA key {label!r} sensitive and "
            "unextractable (CKA_SENSITIVE, CKA_EXTRACTABLE)")
    left = []
    for attribute in _PRIVATE_NARROWING:
        try:
            if private[attribute]:
                left.append(f"CKA_{attribute.name}")
        except p11.PKCS11Error:
            continue
    if left:
        log.warning("the PKCS#11 module keeps %s set on the CA key %r", ", ".join(left), label)


def import_ca_key(connection: HsmConnection, label: str, key_pem: bytes) -> keys.PublicKeyInfo:
    """Copy an existing CA private key (PEM) into the token as a sensitive, unextractable key."""
    private = serialization.load_pem_private_key(key_pem, password=None)
    key_id = os.urandom(16)
    with connection.admin_session() as session:
        if _find(session, label, ObjectClass.PRIVATE_KEY) is not None:
            raise HsmError(f"the token already holds a key labelled {label!r}")
        private_attrs: dict[Attribute, object] = {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY, **_private_template(label, key_id),
        }
        public_attrs: dict[Attribute, object] = {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY, **_public_template(label, key_id),
        }
        if isinstance(private, rsa.RSAPrivateKey):
            numbers = private.private_numbers()
            public_numbers = numbers.public_numbers
            modulus = _octets(public_numbers.n)
            exponent = _octets(public_numbers.e)
            private_attrs.update({
                Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: modulus,
                Attribute.PUBLIC_EXPONENT: exponent,
                Attribute.PRIVATE_EXPONENT: _octets(numbers.d),
                Attribute.PRIME_1: _octets(numbers.p), Attribute.PRIME_2: _octets(numbers.q),
                Attribute.EXPONENT_1: _octets(numbers.dmp1),
                Attribute.EXPONENT_2: _octets(numbers.dmq1),
                Attribute.COEFFICIENT: _octets(numbers.iqmp),
            })
            public_attrs.update({
                Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: modulus,
                Attribute.PUBLIC_EXPONENT: exponent,
            })
        elif isinstance(private, ec.EllipticCurvePrivateKey):
            curve = {"secp256r1": "secp256r1", "secp384r1": "secp384r1"}.get(private.curve.name)
            if curve is None:
                raise ValueError(f"unsupported CA curve {private.curve.name}")
            size = (private.curve.key_size + 7) // 8
            point = private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            private_attrs.update({
                Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: _ec_params(curve),
                Attribute.VALUE: private.private_numbers().private_value.to_bytes(size, "big"),
            })
            public_attrs.update({
                Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: _ec_params(curve),
                Attribute.EC_POINT: core.OctetString(point).dump(),
            })
        else:
            raise ValueError("the CA key must be RSA or EC")
        try:
            session.create_object(private_attrs)
        except (*_REFUSED_TEMPLATE, p11.FunctionNotSupported) as exc:
            raise MissingCapability(
                "the PKCS#11 module refused to create the CA private key object "
                f"(C_CreateObject with CKO_PRIVATE_KEY: {type(exc).__name__}); import the "
                "key with the token's own tool instead") from exc
        public = session.create_object(public_attrs)
        return _public_key_info(public)


def read_public_key(connection: HsmConnection, label: str) -> keys.PublicKeyInfo:
    """The public half of the CA key pair, from the token's public key object."""
    with connection.admin_session() as session:
        public = _find(session, label, ObjectClass.PUBLIC_KEY)
        if public is None:
            raise HsmError(f"the token holds no public key labelled {label!r}")
        return _public_key_info(public)


def key_attributes(connection: HsmConnection, label: str) -> dict[str, bool]:
    """The protection flags of the private key as the token reports them."""
    with connection.admin_session() as session:
        private = _find(session, label, ObjectClass.PRIVATE_KEY)
        if private is None:
            raise HsmError(f"the token holds no private key labelled {label!r}")
        return {
            "sensitive": bool(private[Attribute.SENSITIVE]),
            "extractable": bool(private[Attribute.EXTRACTABLE]),
            "always_sensitive": bool(private[Attribute.ALWAYS_SENSITIVE]),
            "never_extractable": bool(private[Attribute.NEVER_EXTRACTABLE]),
        }


@dataclass(frozen=True)
class CaSigner:
    """Signs with the CA private key in the token, in the scheme its public key calls for."""

    connection: HsmConnection
    key_label: str
    scheme: SignatureScheme

    @classmethod
    def for_public_key(
        cls, connection: HsmConnection, key_label: str, public_key: keys.PublicKeyInfo
    ) -> "CaSigner":
        return cls(connection, key_label, scheme_for(public_key))

    def sign(self, message: bytes, wait_seconds: float | None = None) -> bytes:
        """The X.509 signature value of ``message`` (DER for ECDSA)."""
        payload = self.scheme.to_be_signed(message)
        mechanism = self.scheme.mechanism
        raw = self.connection.run(
            lambda keyring: keyring.private_key(self.key_label).sign(
                payload, mechanism=mechanism
            ),
            wait_seconds,
        )
        return self.scheme.signature_value(raw)


def check_matches(signer: CaSigner, ca_public_key: keys.PublicKeyInfo, ca_name: str) -> None:
    """Sign a fresh challenge in the token and verify it with the certificate's public key."""
    try:
        token_public = read_public_key(signer.connection, signer.key_label)
    except HsmError:
        token_public = None  # tokens may keep no public object; the challenge decides
    if token_public is not None and not _same_key(token_public, ca_public_key):
        raise CaMismatch(
            f"the CA certificate {ca_name} ({ca_public_key.algorithm} key) does not match the "
            f"key {signer.key_label!r} in the HSM ({token_public.algorithm} key)"
        )
    challenge = os.urandom(32)
    signature = signer.sign(challenge)
    public = serialization.load_der_public_key(ca_public_key.dump())
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    algorithm = digest[signer.scheme.hash_name]
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, challenge, padding.PKCS1v15(), algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, challenge, ec.ECDSA(algorithm))
        else:
            raise CaMismatch(f"the CA certificate {ca_name} has an unsupported key type")
    except (InvalidSignature, ValueError) as exc:
        raise CaMismatch(
            f"the CA certificate {ca_name} does not match the key {signer.key_label!r} "
            "in the HSM"
        ) from exc


def _same_key(first: keys.PublicKeyInfo, second: keys.PublicKeyInfo) -> bool:
    if first.algorithm != second.algorithm:
        return False
    if first.algorithm == "ec" and first.curve != second.curve:
        return False
    return bool(first["public_key"].native == second["public_key"].native)


def _find(session: pkcs11.Session, label: str, object_class: ObjectClass) -> Any:
    found = list(session.get_objects({Attribute.LABEL: label, Attribute.CLASS: object_class}))
    return found[0] if found else None


def _octets(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _public_key_info(public: Any) -> keys.PublicKeyInfo:
    if public.key_type == KeyType.RSA:
        return keys.PublicKeyInfo({
            "algorithm": {"algorithm": "rsa", "parameters": core.Null()},
            "public_key": keys.RSAPublicKey({
                "modulus": int.from_bytes(public[Attribute.MODULUS], "big"),
                "public_exponent": int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            }),
        })
    params = keys.ECDomainParameters.load(public[Attribute.EC_PARAMS])
    curve = params.chosen.native
    point = public[Attribute.EC_POINT]
    if len(point) != _POINT_SIZES.get(curve):
        point = core.OctetString.load(point).native
    return keys.PublicKeyInfo({
        "algorithm": {"algorithm": "ec", "parameters": params},
        "public_key": point,
    })
