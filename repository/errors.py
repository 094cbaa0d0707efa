"""Typed errors of the certificate store; database driver errors never leave the package raw."""


class RepositoryError(Exception):
    """Base class of every error the store raises on purpose."""


class NotFound(RepositoryError):
    """No active certificate (or no pending revocation target) has the given serial."""


class Conflict(RepositoryError):
    """The change collides with stored data, e.g. a serial that already exists."""


class AlreadyDownloaded(RepositoryError):
    """The certificate's key was already handed out once; it is never handed out again."""


class NotOwner(RepositoryError):
    """The certificate exists but belongs to a different thing than the caller named."""


class Unavailable(RepositoryError):
    """The database cannot be reached or did not answer in time; the outcome may be unknown."""
