"""SoftHSM2 set-up for the embedded default and the tests: a token directory and its config.

Only the provisioning lives here; signing goes through plain PKCS#11 like any other HSM.
"""

import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_module() -> str:
    """The SoftHSM2 PKCS#11 library on this machine; FileNotFoundError when not installed."""
    for candidate in DEFAULT_MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError("SoftHSM2 is not installed (Debian package softhsm2)")


def write_config(state_dir: Path) -> Path:
    """A softhsm2.conf keeping tokens under ``state_dir/tokens``; returns its path."""
    tokens = state_dir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    config = state_dir / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    return config


def init_token(config: Path, label: str, pin: str, so_pin: str) -> None:
    """Create a token with ``label`` in the first free slot (softhsm2-util)."""
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise FileNotFoundError("softhsm2-util is not installed (Debian package softhsm2)")
    env = {**os.environ, "SOFTHSM2_CONF": str(config)}
    subprocess.run(
        [tool, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
