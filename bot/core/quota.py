"""The daily image quota, in one place: what a user may make today, checked at admission, and
what a finished job charges.

Usage is read from the store's ledger (counts and times only), which outlives the jobs, so
deleting one's jobs (/forget-me) never gives a day's images back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bot.core.errors import QuotaExceeded
from bot.core.models import GuildSettings, Member, NewImage, User


def utc_midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def until(now: datetime, then: datetime) -> str:
    minutes = max(1, int((then - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def daily_quota(user: User, guild: GuildSettings, member: Member | None, ceiling: int) -> int:
    """The operator's override for this user, else this server's for this member, else the
    server's default, else the installation's (``ceiling``). A server may lower the
    installation's quota but not raise it: its members' images are made on the operator's
    hardware."""
    if user.daily_quota is not None:
        return user.daily_quota
    for value in (member.daily_quota if member else None, guild.daily_images_per_user):
        if value is not None:
            return min(value, ceiling)
    return ceiling


def counting_since(user: User, now: datetime) -> datetime:
    """Today's usage counts from UTC midnight, or from when the operator gave it back."""
    since = utc_midnight(now)
    if user.quota_reset_at is not None and user.quota_reset_at > since:
        since = user.quota_reset_at
    return since


def check(*, images: int, quota: int, used: int, reserved: int, now: datetime) -> None:
    """Raise QuotaExceeded unless ``images`` more fit in today's quota (``reserved``: images
    that the user's unfinished jobs will make)."""
    left = quota - used - reserved
    if images <= left:
        return
    if quota == 0:
        raise QuotaExceeded("Image generation is switched off for you.")
    reset = utc_midnight(now) + timedelta(days=1)
    raise QuotaExceeded(
        f"This needs {images} images but you have {max(left, 0)} left today "
        f"({quota} a day, {reserved} reserved by running jobs). The quota resets at "
        f"00:00 UTC, in {until(now, reset)}."
    )


def charge(images: Sequence[NewImage]) -> int:
    """What a delivered job costs: its images that were not withheld by the image check."""
    return sum(1 for image in images if not image.withheld)
