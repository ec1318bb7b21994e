"""The three kinds of failure tensorsmith reports, and their exit codes.

Every error a user can cause ends as one of these; the CLI prints its message on
one line and exits with its code (see README, "Exit codes").
"""

from __future__ import annotations


class TensorsmithError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(TensorsmithError):
    """Bad usage or an input that cannot be read: missing, truncated, not a model."""

    exit_code = 2


class ConversionError(TensorsmithError):
    """A conversion, a pass or a backend build failed."""

    exit_code = 3


class VerificationError(TensorsmithError):
    """The result does not match the source within tolerance."""

    exit_code = 4

    def __init__(self, message: str, *, report=None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.report = report


def short(exc: BaseException | str, limit: int = 240) -> str:
    """An exception (or text) as one line of at most ``limit`` characters, for messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXIT_OK = 0
EXIT_CODES = {
    0: "success",
    1: "one or more jobs failed (recipes); lint found problems",
    2: "bad usage, or an input that cannot be read",
    3: "a conversion, a pass or a build failed",
    4: "verification failed (no output is written)",
}
