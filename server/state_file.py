"""The settings of a state folder: ``<state>/certs.env``, written by ``scripts/run`` (the
quickstart) and read by ``certs --state <state>`` (or ``CERTS_STATE=<state>``), so the operator's
command line works on what the quickstart set up without exporting anything by hand.

One ``NAME=value`` per line, no quotes (the values are paths, labels and URLs); lines starting
with ``#`` are comments. The file names the PIN file, not the PIN, and is kept 0600. Variables
already set (not empty) in the environment win over the file.
"""

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from authority.files import write_atomically

FILE_NAME = "certs.env"
STATE_VARIABLE = "CERTS_STATE"


class StateError(Exception):
    """The state folder holds no usable settings file."""


def write_state(state: Path, values: Mapping[str, str]) -> Path:
    """Write `values` to ``state/certs.env`` (mode 0600)."""
    lines = ["# Settings of this state folder, written by scripts/run; read by certs --state."]
    for name, value in values.items():
        if "\n" in value or "=" in name:
            raise ValueError(f"{name} cannot be written to {FILE_NAME}")
        lines.append(f"{name}={value}")
    path = state / FILE_NAME
    write_atomically(path, "\n".join(lines) + "\n", mode=0o600)
    return path


def read_state(state: Path) -> dict[str, str]:
    """The variables of ``state/certs.env``; StateError when it is missing or malformed."""
    path = state / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot read {path} ({exc.strerror}); scripts/run writes it in its "
                         f"state folder (--state or {STATE_VARIABLE})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise StateError(f"{path}, line {number}: expected NAME=value")
        values[name.strip()] = value
    return values


def apply_state(state: Path, environ: MutableMapping[str, str] | None = None) -> None:
    """Put the state file's variables into `environ` (the process environment by default) where
    it does not set them already (an empty variable counts as not set)."""
    environ = os.environ if environ is None else environ
    for name, value in read_state(state).items():
        if not environ.get(name):
            environ[name] = value
