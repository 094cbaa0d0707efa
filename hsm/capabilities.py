"""What a token can do, asked once per connection (C_GetMechanismList, C_GetMechanismInfo).

The service never asks which module it runs on: whatever it needs is checked here against what
the module reports, and a missing mechanism stops the start with one line naming it.
"""

from dataclasses import dataclass

import pkcs11
from pkcs11 import Mechanism, MechanismFlag

from hsm.errors import HsmError


class MissingCapability(HsmError):
    """The PKCS#11 module cannot do something the configured CA or sealing needs."""


@dataclass(frozen=True)
class MechanismLimits:
    min_key: int
    max_key: int
    flags: MechanismFlag


@dataclass(frozen=True)
class Capabilities:
    """The mechanisms of one token with their key size limits and flags."""

    module_path: str
    mechanisms: dict[Mechanism, MechanismLimits]

    def has(self, mechanism: Mechanism, flag: MechanismFlag, key_size: int | None = None) -> bool:
        limits = self.mechanisms.get(mechanism)
        if limits is None or limits.flags & flag != flag:
            return False
        # A module reporting 0..0 gives no size information.
        bounded = limits.max_key > 0
        return key_size is None or not bounded or limits.min_key <= key_size <= limits.max_key

    def require(self, mechanism: Mechanism, flag: MechanismFlag, need: str,
                key_size: int | None = None, unit: str = "bits") -> None:
        """Raise MissingCapability, naming the mechanism, unless it is offered as needed."""
        if self.has(mechanism, flag, key_size):
            return
        name = f"CKM_{mechanism.name}"
        operation = (flag.name or str(flag)).lower()
        limits = self.mechanisms.get(mechanism)
        if limits is None:
            why = f"does not offer {name}"
        elif limits.flags & flag != flag:
            why = f"offers {name} but not for {operation}"
        else:
            why = (f"supports {name} with keys of {limits.min_key}-{limits.max_key} {unit}, "
                   f"not {key_size}")
        raise MissingCapability(f"the PKCS#11 module {self.module_path} {why}, which {need} needs")


def query(token: pkcs11.Token, module_path: str) -> Capabilities:
    """The token's mechanism list with each mechanism's limits."""
    slot = token.slot
    mechanisms: dict[Mechanism, MechanismLimits] = {}
    for mechanism in slot.get_mechanisms():
        if not isinstance(mechanism, Mechanism):
            continue  # vendor-defined: never needed here
        try:
            info = slot.get_mechanism_info(mechanism)
        except pkcs11.exceptions.PKCS11Error:
            continue
        mechanisms[mechanism] = MechanismLimits(
            info.min_key_length or 0, info.max_key_length or 0, MechanismFlag(info.flags)
        )
    return Capabilities(module_path, mechanisms)
