"""One error hierarchy for the whole package; the CLI maps each class to an exit code.

    >>> from vault.errors import VerificationError
    >>> try:
    ...     raise VerificationError("package P-1: envelope signature does not verify")
    ... except VaultError as e:
    ...     print(e.exit_code)
    3

Messages name the object, the rule and, where one exists, the next step, in one line,
lowercase, with no final period (the CLI prefixes ``evault:``).
"""

from __future__ import annotations


class VaultError(Exception):
    """Base class of every expected failure; anything else is a bug and shows a traceback."""

    exit_code = 1


class UsageError(VaultError):
    """The command line or an input file asks for something malformed (exit 2)."""

    exit_code = 2


class OptionsError(UsageError):
    """Options or arguments of a command that do not go together, or a missing one (exit 2):
    the CLI shows it as click shows its own usage errors, under the command's usage line."""


class Reported(VaultError):
    """A failure the command has shown already (each defect, each failed file, on its
    output): the CLI adds no message, only the exit code: 3 when what failed is a
    verification, else 1."""

    def __init__(self, *, verification: bool) -> None:
        super().__init__("")
        self.exit_code = VerificationError.exit_code if verification else VaultError.exit_code


class NotFoundError(VaultError):
    """A named object (vault, item, body, identity, package) does not exist."""


class ConflictError(VaultError):
    """The object exists already, or the request contradicts the vault's state."""


class ConfigError(VaultError):
    """The vault, its configuration or its key store cannot be used as it is."""


class KeyStoreError(VaultError):
    """A private key cannot be stored or retrieved."""


class KeyMissingError(KeyStoreError):
    """The key store works, but holds nothing under the name asked for."""


class PolicyError(VaultError):
    """A release rule or a key's state forbids the operation."""


class InternalError(VaultError):
    """A bug in evault that harmed one object alone (a package whose payload did not come to
    the size computed for it): that object is refused, the others go on (exit 1)."""


class VerificationError(VaultError):
    """A signature, digest, proof or binding does not verify (exit 3)."""

    exit_code = 3


class DecryptionError(VerificationError):
    """Decryption or authentication failed; deliberately opaque so it is no oracle."""
