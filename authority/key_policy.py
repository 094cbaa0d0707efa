"""Which client keys the service certifies: the one table of key types and sizes (SPEC 3)."""

from dataclasses import dataclass

RSA = "rsa"
EC = "ec"

# Sizes a server-generated client key may have; P-224 only for compatibility with the Go service.
GENERATED_KEY_BITS: dict[str, tuple[int, ...]] = {RSA: (2048, 3072, 4096), EC: (224, 256, 384, 521)}
# Sizes a device's own key (CSR) may have: P-224 is refused.
DEVICE_KEY_BITS: dict[str, tuple[int, ...]] = {RSA: (2048, 3072, 4096), EC: (256, 384, 521)}
DEFAULT_RSA_BITS = 2048
DEFAULT_EC_BITS = 256


class KeyPolicyError(ValueError):
    """A key outside the policy; ``field`` says which: ``key_type`` or ``key_bits``."""

    def __init__(self, field: str) -> None:
        super().__init__(f"unsupported {field}")
        self.field = field


@dataclass(frozen=True)
class KeySpec:
    """A client key's type (``rsa`` or ``ec``) and size (RSA modulus or EC curve bits)."""

    key_type: str
    key_bits: int


def key_type_of(name: str) -> str:
    """``rsa``, ``ec`` (``ecdsa`` is its synonym), any case; KeyPolicyError otherwise."""
    lowered = name.lower()
    if lowered == RSA:
        return RSA
    if lowered in (EC, "ecdsa"):
        return EC
    raise KeyPolicyError("key_type")


def default_bits(key_type: str, rsa_default: int = DEFAULT_RSA_BITS) -> int:
    """The size used when a request names none (MF_CERTS_SIGN_RSA_BITS for RSA)."""
    return rsa_default if key_type == RSA else DEFAULT_EC_BITS


def generated_key(key_type: str, key_bits: int) -> KeySpec:
    """The spec of a key the service may generate; KeyPolicyError otherwise."""
    if key_type not in GENERATED_KEY_BITS:
        raise KeyPolicyError("key_type")
    if key_bits not in GENERATED_KEY_BITS[key_type]:
        raise KeyPolicyError("key_bits")
    return KeySpec(key_type, key_bits)


def device_key(key_type: str, key_bits: int) -> KeySpec:
    """The spec of a device-held key (from a CSR) the service may certify; KeyPolicyError
    otherwise."""
    if key_type not in DEVICE_KEY_BITS:
        raise KeyPolicyError("key_type")
    if key_bits not in DEVICE_KEY_BITS[key_type]:
        raise KeyPolicyError("key_bits")
    return KeySpec(key_type, key_bits)
