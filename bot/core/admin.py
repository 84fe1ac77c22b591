"""The admin use cases, shared by Discord's /admin and ``easel admin``.

Every method checks the caller's rights first, before it looks at anything it was given
(Discord's permission hint on the command can be changed by server admins and is never
trusted), and writes an ``audit_event``; so is every refused attempt.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from bot.core.errors import InvalidInput, NotAllowed, NotFound
from bot.core.grammar import DEFAULT_PARAMETERS, check_default, find_model
from bot.core.models import (
    AuditEvent,
    BlocklistEntry,
    GuildSettings,
    Job,
    JobState,
    Member,
    NsfwRule,
    User,
)
from bot.core.moderation import compile_blocklist_term
from bot.core.service import Actor, Service, utc_midnight
from engine.requests import EngineHealth

Ban = User | Member  # where a ban lives: the user (everywhere) or the member (one server)

_DURATION = re.compile(r"^\s*(\d{1,4})\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_BAN = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """'30m', '12h', '7d', '2w' → a timedelta (a pure converter, like RoboDanny's)."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidInput(
            f"'{text}' is not a duration; write a number and a unit: 30m, 12h, 7d or 2w."
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidInput("A duration must be longer than zero.")
    return min(timedelta(seconds=seconds), MAX_BAN)


@dataclass(frozen=True)
class QueueEntry:
    job: Job
    position: int | None  # jobs ahead in the engine; None: recorded but not in this engine
    user: User


@dataclass(frozen=True)
class Stats:
    jobs_today: int
    images_today: int
    by_state: dict[str, int]
    queue_length: int
    mean_seconds: float | None
    p95_seconds: float | None
    engine: EngineHealth


class Admin:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store

    async def _check(self, actor: Actor) -> GuildSettings:
        guild = await self.service.guild(actor)
        try:
            self.service.require_admin(actor, guild)
        except NotAllowed as exc:
            await self.service.refuse(actor, str(exc), kind="NotAllowed", what="admin")
            raise
        return guild

    async def _audit(
        self,
        actor: Actor,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        **detail: Any,
    ) -> None:
        await self.store.add_audit(
            actor=actor.key,
            action=action,
            target=target,
            reason=reason,
            guild_id=actor.guild_id,
            detail=detail,
        )

    async def _target(self, key: str, name: str | None = None) -> User:
        return await self.store.get_or_create_user(key, name or key.partition(":")[2])

    # -- users ---------------------------------------------------------------------------------

    async def ban(
        self,
        actor: Actor,
        target_key: str,
        *,
        reason: str | None = None,
        duration: str | None = None,
        target_name: str | None = None,
    ) -> Ban:
        """Ban on this server (a server admin), or everywhere (the operator, from the CLI)."""
        await self._check(actor)
        if target_key == actor.key:
            raise InvalidInput("You cannot ban yourself.")
        until = self.service.now() + parse_duration(duration) if duration else None
        user = await self._target(target_key, target_name)
        if actor.guild_id is None:
            ban: Ban = await self.store.set_ban(user.id, banned=True, reason=reason, until=until)
        else:
            ban = await self.store.set_member_ban(
                actor.guild_id, user.id, banned=True, reason=reason, until=until
            )
        for job in await self.store.list_jobs(
            user_id=user.id,
            guild_id=actor.guild_id,
            states=[JobState.QUEUED, JobState.RUNNING],
            limit=1000,
        ):
            self.service.engine.cancel(job.id)  # a ban stops what they have waiting too
        await self._audit(
            actor, "ban", target_key, reason, until=until.isoformat() if until else None
        )
        return ban

    async def unban(self, actor: Actor, target_key: str, *, reason: str | None = None) -> Ban:
        await self._check(actor)
        user = await self.store.find_user(target_key)
        if user is None:
            raise NotFound("That user is not banned.")
        if actor.guild_id is None:
            if not user.banned:
                raise NotFound("That user is not banned.")
            ban: Ban = await self.store.set_ban(user.id, banned=False, reason=None, until=None)
        else:
            if not (await self.store.get_member(actor.guild_id, user.id)).banned:
                raise NotFound("That user is not banned on this server.")
            ban = await self.store.set_member_ban(
                actor.guild_id, user.id, banned=False, reason=None, until=None
            )
        await self._audit(actor, "unban", target_key, reason)
        return ban

    async def set_quota(
        self,
        actor: Actor,
        target_key: str,
        daily_images: int | None,
        *,
        back_to_default: bool = False,
        reset_usage: bool = False,
        target_name: str | None = None,
    ) -> int:
        """Set a user's daily image quota (or put it back to the default) and, for the operator,
        give them today's images back. Returns the quota now in force there."""
        guild = await self._check(actor)
        if back_to_default:
            daily_images = None
        elif daily_images is None and not reset_usage:
            raise InvalidInput("Give the number of images a day, or go back to the default.")
        if daily_images is not None and not 0 <= daily_images <= 100_000:
            raise InvalidInput("A daily quota goes from 0 to 100000 images.")
        user = await self._target(target_key, target_name)
        if actor.guild_id is None:
            user = await self.store.set_quota(
                user.id, daily_quota=daily_images, reset_usage=reset_usage
            )
            member = None
        else:
            if reset_usage:
                raise InvalidInput(
                    "Only the operator can give back images already used "
                    "(easel admin quota USER N --reset)."
                )
            ceiling = self.service.config.daily_images_per_user
            if daily_images is not None and daily_images > ceiling and user.daily_quota is None:
                raise InvalidInput(
                    f"This installation allows at most {ceiling} images a day per user; "
                    "its operator can raise it."
                )
            member = await self.store.set_member_quota(actor.guild_id, user.id, daily_images)
        await self._audit(
            actor, "quota", target_key, None, daily_images=daily_images, reset=reset_usage
        )
        return self.service.daily_quota(user, guild, member)

    # -- blocklist -----------------------------------------------------------------------------

    async def block(self, actor: Actor, term: str) -> str:
        await self._check(actor)
        pattern = compile_blocklist_term(term)  # raises a clear InvalidInput for bad terms
        clean = " ".join(term.split()).lower()[:200]
        await self.store.add_block_term(actor.guild_id, clean, actor.key)
        await self._audit(actor, "blocklist_add", clean, None, normalised=pattern.normalised)
        return clean

    async def unblock(self, actor: Actor, term: str) -> str:
        await self._check(actor)
        clean = " ".join(term.split()).lower()
        await self.store.remove_block_term(actor.guild_id, clean)
        await self._audit(actor, "blocklist_remove", clean)
        return clean

    async def blocklist(self, actor: Actor) -> list[BlocklistEntry]:
        await self._check(actor)
        return await self.store.list_block_terms(actor.guild_id)

    # -- the queue and jobs --------------------------------------------------------------------

    async def queue(self, actor: Actor) -> list[QueueEntry]:
        await self._check(actor)
        positions = {e.job_id: e.position for e in self.service.engine.snapshot()}
        waiting = await self.store.list_jobs(
            guild_id=actor.guild_id,
            states=[JobState.QUEUED, JobState.RUNNING],
            limit=200,
            oldest_first=True,
        )
        entries = [
            QueueEntry(job, positions.get(job.id), await self.store.get_user(job.user_id))
            for job in waiting
        ]
        return sorted(entries, key=lambda e: (e.position is None, e.position or 0, e.job.id))

    async def cancel(self, actor: Actor, job_id: int, *, reason: str | None = None) -> Job:
        await self._check(actor)
        job = await self._job_here(actor, job_id)
        if job.state.finished:
            raise InvalidInput(f"Job #{job_id} has already {job.state}.")
        self.service.engine.cancel(job_id)
        job = await self.store.finish_job(
            job_id, JobState.CANCELLED, error="Cancelled by an admin."
        )
        await self._audit(actor, "cancel", f"job:{job_id}", reason)
        return job

    async def purge(
        self, actor: Actor, job_id: int, *, reason: str | None = None
    ) -> tuple[Job, list[tuple[int, int]]]:
        """Delete a job's image files and mark its rows. Returns the job and every message its
        images were posted in (channel id, message id), for the adapter to delete."""
        await self._check(actor)
        job = await self._job_here(actor, job_id)
        deleted, messages = await self.service.purge(job)
        await self._audit(
            actor, "purge", f"job:{job_id}", reason, files=deleted, messages=len(messages)
        )
        return await self.store.get_job(job_id), messages

    async def _job_here(self, actor: Actor, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        # A server's admins act on their own server's jobs (the CLI operator on all of them).
        if actor.guild_id is not None and job.guild_id != actor.guild_id:
            raise NotFound(f"There is no job #{job_id} on this server.")
        return job

    # -- server settings -----------------------------------------------------------------------

    async def settings(self, actor: Actor) -> GuildSettings:
        return await self._check(actor)

    def warnings(self, guild: GuildSettings) -> list[str]:
        """What an admin should know about this server's settings."""
        if guild.allow_uploads and self.service.classifier is None:
            return [
                "Members may upload photos, and no image check is configured: edits of real "
                "people's photos are held back only by the prompt rules. Ask the operator to set "
                "EASEL_SAFETY_CHECKER, or turn uploads off with /admin set uploads:False."
            ]
        return []

    async def update_settings(self, actor: Actor, **changes: Any) -> GuildSettings:
        """Change this server's rules and defaults; each value is checked before saving."""
        guild = await self._check(actor)
        if not changes:
            raise InvalidInput("Nothing to change: give at least one option.")
        if actor.guild_id is None:
            raise InvalidInput("Server settings only exist in a server.")
        limits = self.service.config.limits
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "nsfw_rule":
                try:
                    value = NsfwRule(value)
                except ValueError:
                    raise InvalidInput("The NSFW rule is 'block' or 'age_restricted'.") from None
            elif name == "max_steps" and value is not None:
                if not 1 <= value <= limits.max_steps:
                    raise InvalidInput(f"Max steps goes from 1 to {limits.max_steps} here.")
            elif name == "daily_images_per_user" and value is not None:
                ceiling = self.service.config.daily_images_per_user
                if not 0 <= value <= ceiling:
                    raise InvalidInput(
                        f"A server's daily quota goes from 0 to this installation's {ceiling}."
                    )
            elif name == "model" and value is not None:
                value = find_model(self.service.engine.catalogue, value).name
            elif name in DEFAULT_PARAMETERS and value is not None:
                value = check_default(name, value, limits)
            elif name in ("allowed_channel_ids", "admin_role_ids"):
                value = tuple(sorted({int(v) for v in value}))
            elif name not in ("negative", "blur_flagged", "allow_uploads"):
                raise InvalidInput(f"There is no server setting called {name}.")
            clean[name] = value
        updated = replace(guild, **clean)
        await self.store.save_guild_settings(actor.guild_id, updated)
        await self._audit(
            actor,
            "guild_settings",
            f"guild:{actor.guild_id}",
            None,
            **{k: (str(v) if isinstance(v, NsfwRule) else v) for k, v in clean.items()},
        )
        return updated

    # -- looking -------------------------------------------------------------------------------

    async def stats(self, actor: Actor) -> Stats:
        await self._check(actor)
        since = utc_midnight(self.service.now())
        raw = await self.store.job_stats(since, guild_id=actor.guild_id)
        durations = raw["durations"]
        p95 = None
        if durations:
            p95 = durations[min(len(durations) - 1, round(0.95 * (len(durations) - 1)))]
        return Stats(
            jobs_today=raw["jobs"],
            images_today=raw["images"],
            by_state=raw["by_state"],
            queue_length=len(self.service.engine.snapshot()),
            mean_seconds=statistics.fmean(durations) if durations else None,
            p95_seconds=p95,
            engine=self.service.engine.health(),
        )

    async def audit_log(self, actor: Actor, limit: int = 20) -> list[AuditEvent]:
        await self._check(actor)
        return await self.store.list_audit(guild_id=actor.guild_id, limit=min(limit, 100))
