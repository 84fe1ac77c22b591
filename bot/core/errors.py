"""The one error tree. ``str(error)`` is exactly the text a user reads.

Adapters catch :class:`EaselError` and show it; anything else is an internal failure that is
logged and answered with a generic line. The branch decides the CLI exit status
(``InvalidInput`` → 2, ``Refused`` → 3).
"""

from __future__ import annotations


class EaselError(Exception):
    """Base of every error a user may read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(EaselError):
    """The request itself is wrong: fix the command and try again."""


class PromptSyntaxError(InvalidInput):
    """The prompt grammar could not parse the text (unknown or malformed parameter)."""


class ParameterOutOfRange(InvalidInput):
    """A parameter was well formed but outside its allowed range."""


class EmptyPrompt(InvalidInput):
    """Nothing to draw."""


class UnknownPreset(InvalidInput):
    """``--preset NAME`` names no saved preset."""


class BadImage(InvalidInput):
    """An uploaded image cannot be used (type, size, dimensions, corrupt)."""


class NotFound(InvalidInput):
    """A job, image or preset the user referred to does not exist (or is not theirs)."""


class Refused(EaselError):
    """The request is valid but Easel will not run it now (policy, quota, load, bans)."""


class Banned(Refused):
    pass


class QuotaExceeded(Refused):
    pass


class QueueFull(Refused):
    pass


class TooManyJobs(Refused):
    """The user already has the maximum number of jobs waiting."""


class CoolingDown(Refused):
    pass


class PolicyRefusal(Refused):
    """The prompt or image breaks the content policy."""

    def __init__(self, message: str, *, category: str, hard: bool = False) -> None:
        super().__init__(message)
        self.category = category
        self.hard = hard


class NotAllowed(Refused):
    """The caller lacks the permission for this action (e.g. admin commands)."""


class GenerationFailed(EaselError):
    """The engine could not produce the images; nothing was charged."""


class Cancelled(EaselError):
    """The job was cancelled before it finished; nothing was charged."""


class ConfigError(EaselError):
    """A setting has a wrong value; the message names the setting."""
