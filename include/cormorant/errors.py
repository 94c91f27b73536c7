"""Cormorant's user-facing errors, and whether trying again can help.

Every error a user can cause or fix is a :class:`CormorantError` whose message names the spec, table,
column, day or param at fault. ``retryable`` tells the orchestrator what to do with it: a deterministic
error (a malformed spec, a changed source schema, data that failed validation, a bad param) fails the
task at once, because a retry would fail the same way minutes later; a retryable one (a partition not
landed or not validated *yet*) is retried by the task's policy. Errors that are not Cormorant's
(connection resets, timeouts, a lost worker) are retried as well.
"""

from __future__ import annotations


class CormorantError(Exception):
    """Base of Cormorant's errors; deterministic unless a subclass says otherwise."""

    retryable = False


class NothingToDo(CormorantError):
    """A documented "nothing to do" (an empty day to score, no champion yet): the task is skipped."""


class PartitionNotValidated(CormorantError):
    """A partition has not passed validation for its current commit (or is not validated yet)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class ParamError(CormorantError):
    """A run's conf or param is wrong (an unknown key, a model version that does not exist)."""


class TrialFailed(CormorantError):
    """A sweep trial failed; ``cause`` is the trainer's own error and ``retryable`` whether a retry
    could help (a lost connection could; bad data or bad hyper-parameters could not)."""

    def __init__(self, message: str, *, cause: str = "", retryable: bool = False):
        super().__init__(message)
        self.cause = cause
        self.retryable = retryable


def first_line(error: BaseException) -> str:
    """The error's message in one line (its first), or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """``; did you mean 'x'?`` for the choice closest to ``name``, or an empty string."""
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {found[0]!r}?" if found else ""
