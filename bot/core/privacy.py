"""Who may see a job's images, and where: one set of rules for every path (commands, buttons,
modals, resumed jobs, the CLI).

A job's visibility is decided once, when it is made, and inherited by every job made from its
images (``derive``): a private result stays private, an image made where age-restricted content
was allowed stays in such places, and anything derived from an uploaded photo stays under the
photo hard limits, whoever owns it and whatever is deleted later.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.errors import NotFound, Refused
from bot.core.models import Job


@dataclass(frozen=True)
class Place:
    """Where something would be shown."""

    guild_id: int | None
    channel_id: int | None
    nsfw_allowed: bool  # the server's rule and Discord's age-restricted flag both allow it


@dataclass(frozen=True)
class Visibility:
    """What a new job inherits and decides."""

    private: bool
    age_restricted: bool
    from_photo: bool


class AgeRestricted(Refused):
    """An image made where age-restricted content was allowed, asked for elsewhere."""


def derive(
    parent: Job | None, *, private_setting: bool, place: Place, photo: bool = False
) -> Visibility:
    """A new job's visibility: the parent's, tightened by where and by whom it is made.

    Private results only exist in servers (a DM is private already). ``private_setting`` is the
    maker's /settings choice; ``photo`` is True when the job starts from an uploaded photo.
    """
    private = place.guild_id is not None and private_setting
    return Visibility(
        private=private or bool(parent and parent.private),
        age_restricted=place.nsfw_allowed or bool(parent and parent.age_restricted),
        from_photo=photo or bool(parent and parent.from_photo),
    )


def check_may_show(job: Job, *, viewer_id: int, place: Place, on_its_message: bool = False) -> None:
    """Raise unless ``job``'s images may be shown to this viewer at this place.

    - Age-restricted images are shown only where age-restricted content is allowed, to everyone
      alike, their owner included (an owner cannot carry them into a safe-for-work channel, another
      server or DMs).
    - The owner may bring back their own jobs anywhere else.
    - Someone else's job: never a private one, and only where it was made or on a message Easel
      posted it in (``on_its_message``: the press came from a message recorded for this job), so
      an image cannot be moved to a channel it was never shown in.
    """
    check_age(job, place)
    if job.user_id == viewer_id:
        return
    if job.private or not (on_its_message or job.channel_id == place.channel_id):
        raise NotFound(f"There is no job #{job.id} here.")


def check_age(job: Job, place: Place) -> None:
    """Raise if ``job`` was made where age-restricted content was allowed and ``place`` is not
    such a place (a safe-for-work channel, another server, any DM)."""
    if job.age_restricted and not place.nsfw_allowed:
        raise AgeRestricted(
            f"Job #{job.id} was made in an age-restricted channel; it can only be shown in one "
            "where this server allows it."
        )
