"""The repository: every read and write the service needs, one short transaction each.

Rows never leave this module; callers get the frozen records of :mod:`bot.core.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, cast, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.errors import InvalidInput, NotFound
from bot.core.grammar import GenerationSpec
from bot.core.models import (
    MASK_FOLDER,
    AuditEvent,
    BlocklistEntry,
    GuildSettings,
    Image,
    Job,
    JobKind,
    JobState,
    Member,
    NewImage,
    NewJob,
    User,
    UserSettings,
    param_files,
)
from bot.store.tables import (
    AuditEventRow,
    BlocklistEntryRow,
    GuildRow,
    ImageRow,
    ImageUsageRow,
    JobMessageRow,
    JobRow,
    MemberRow,
    UserRow,
    utcnow,
)

UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        key=row.key,
        name=row.name,
        banned=row.banned,
        ban_reason=row.ban_reason,
        banned_until=row.banned_until,
        daily_quota=row.daily_quota,
        quota_reset_at=row.quota_reset_at,
        settings=UserSettings.from_dict(row.settings),
        created_at=row.created_at,
    )


def _member(row: MemberRow) -> Member:
    return Member(
        guild_id=row.guild_id,
        user_id=row.user_id,
        banned=row.banned,
        ban_reason=row.ban_reason,
        banned_until=row.banned_until,
        daily_quota=row.daily_quota,
    )


def _job(row: JobRow) -> Job:
    w, _, h = row.aspect.partition(":")
    return Job(
        id=row.id,
        user_id=row.user_id,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        spec=GenerationSpec(
            prompt=row.prompt,
            negative=row.negative_prompt,
            width=row.width,
            height=row.height,
            aspect=(int(w), int(h)),
            seed=row.seed,
            steps=row.steps,
            guidance=row.guidance,
            sampler=row.sampler,
            count=row.count,
            tile=row.tile,
            strength=row.strength,
            model=row.model,
            loras=tuple((str(name), float(weight)) for name, weight in row.loras or ()),
        ),
        model=row.model,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        message_id=row.message_id,
        parent_job_id=row.parent_job_id,
        parent_index=row.parent_index,
        init_image_path=row.init_image_path,
        error=row.error,
        attempts=row.attempts,
        repro=dict(row.repro or {}),
        charged_images=row.charged_images,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        request_key=row.request_key,
        from_photo=row.from_photo,
        age_restricted=row.age_restricted,
        private=row.private,
        runner=row.runner,
        params=dict(row.params or {}),
        delivery_error=row.delivery_error,
    )


def _image(row: ImageRow) -> Image:
    return Image(
        id=row.id,
        job_id=row.job_id,
        index=row.index,
        seed=row.seed,
        width=row.width,
        height=row.height,
        path=row.path,
        sha256=row.sha256,
        deleted=row.deleted,
        withheld=row.withheld,
        created_at=row.created_at,
    )


def _audit(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        created_at=row.created_at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        reason=row.reason,
        guild_id=row.guild_id,
        detail=dict(row.detail or {}),
    )


Admit = Callable[[int, int, int], None]
"""Raises unless a user with (unfinished jobs, images they reserve, images used) may start one."""


def _pending(user_id: int) -> Select[Any]:
    return select(func.count(JobRow.id), func.coalesce(func.sum(JobRow.count), 0)).where(
        JobRow.user_id == user_id, JobRow.state.in_(UNFINISHED)
    )


def _charged_since(user_id: int, since: datetime) -> Select[Any]:
    return select(func.coalesce(func.sum(ImageUsageRow.images), 0)).where(
        ImageUsageRow.user_id == user_id, ImageUsageRow.created_at >= since
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # -- users ---------------------------------------------------------------------------------

    async def get_or_create_user(self, key: str, name: str) -> User:
        async with self._sessions() as s:
            row = await s.scalar(select(UserRow).where(UserRow.key == key))
            if row is not None:
                if name and row.name != name:
                    row.name = name[:100]
                    await s.commit()
                return _user(row)
            s.add(UserRow(key=key, name=name[:100], settings={}))
            try:
                await s.commit()
            except IntegrityError:  # created concurrently by another request
                await s.rollback()
            row = await s.scalar(select(UserRow).where(UserRow.key == key))
            assert row is not None
            return _user(row)

    async def get_user(self, user_id: int) -> User:
        async with self._sessions() as s:
            row = await s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"There is no user #{user_id}.")
            return _user(row)

    async def find_user(self, key: str) -> User | None:
        async with self._sessions() as s:
            row = await s.scalar(select(UserRow).where(UserRow.key == key))
            return None if row is None else _user(row)

    async def _update_user(self, user_id: int, **values: Any) -> User:
        async with self._sessions() as s:
            row = await s.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"There is no user #{user_id}.")
            for key, value in values.items():
                setattr(row, key, value)
            await s.commit()
            return _user(row)

    async def all_user_settings(self) -> dict[str, UserSettings]:
        """Every user's settings that differ from the defaults, by user key."""
        async with self._sessions() as s:
            rows = await s.execute(select(UserRow.key, UserRow.settings))
            return {key: UserSettings.from_dict(data) for key, data in rows if data}

    async def save_user_settings(self, user_id: int, settings: UserSettings) -> User:
        return await self._update_user(user_id, settings=settings.to_dict())

    async def set_ban(
        self, user_id: int, *, banned: bool, reason: str | None, until: datetime | None
    ) -> User:
        return await self._update_user(
            user_id,
            banned=banned,
            ban_reason=reason if banned else None,
            banned_until=until if banned else None,
        )

    async def set_quota(
        self, user_id: int, *, daily_quota: int | None, reset_usage: bool = False
    ) -> User:
        values: dict[str, Any] = {"daily_quota": daily_quota}
        if reset_usage:
            values["quota_reset_at"] = utcnow()
        return await self._update_user(user_id, **values)

    async def forget_user(self, user_id: int) -> list[str]:
        """Delete what is personal about a user and return the files nobody else uses.

        Deleted: their jobs (prompts, parameters), image rows, messages, settings, name, and the
        prompt text of their refused requests. Other users' jobs made from their images lose the
        start image (they keep ``from_photo``). Kept, because enforcement needs them: the user row
        with its key, bans and quota overrides, their per-server member rows, the quota ledger,
        and the audit trail (refusals without their prompt).
        """
        async with self._sessions() as s:
            user = await s.get(UserRow, user_id)
            if user is None:
                raise NotFound(f"There is no user #{user_id}.")
            mine = select(JobRow.id).where(JobRow.user_id == user_id)
            paths = set(await s.scalars(select(ImageRow.path).where(ImageRow.job_id.in_(mine))))
            paths |= {
                p
                for p in await s.scalars(select(JobRow.init_image_path).where(JobRow.id.in_(mine)))
                if p
            }
            # Uploaded control maps and image prompts, and edits' masks.
            for params in await s.scalars(select(JobRow.params).where(JobRow.id.in_(mine))):
                paths |= set(param_files(params or {}))
            if paths:
                await s.execute(
                    update(JobRow)
                    .where(JobRow.user_id != user_id, JobRow.init_image_path.in_(paths))
                    .values(init_image_path=None)
                )
            await s.execute(delete(JobRow).where(JobRow.user_id == user_id))
            user.name = ""
            user.settings = {}
            for event in await s.scalars(
                select(AuditEventRow).where(
                    AuditEventRow.actor == user.key, AuditEventRow.action == "refuse"
                )
            ):
                event.detail = {k: v for k, v in (event.detail or {}).items() if k != "prompt"}
            await s.commit()
            # A mask (cells, words) is no one's photo, and another member's edit may use it; an
            # upload goes whoever else names it, as a start image others varied does.
            return await self._unreferenced(s, paths, named_under=f"{MASK_FOLDER}/")

    async def _unreferenced(
        self, s: AsyncSession, paths: Iterable[str], *, named_under: str = ""
    ) -> list[str]:
        """Of ``paths``, those no image or job uses. Files are content-addressed: another job
        may hold the very same bytes. Jobs' parameters are searched for the paths that start
        with ``named_under`` (all of them by default)."""
        paths = list(paths)
        if not paths:
            return []
        used = set(
            await s.scalars(
                select(ImageRow.path).where(ImageRow.path.in_(paths), ImageRow.deleted.is_(False))
            )
        )
        used |= set(
            await s.scalars(select(JobRow.init_image_path).where(JobRow.init_image_path.in_(paths)))
        )
        for path in (p for p in paths if p.startswith(named_under) and p not in used):
            # Masks and steering uploads are named in jobs' parameters (JSON), where an index
            # cannot look.
            named = cast(JobRow.params, Text).contains(path, autoescape=True)
            if await s.scalar(select(JobRow.id).where(named).limit(1)) is not None:
                used.add(path)
        return sorted(p for p in paths if p not in used)

    # -- members (a user on one server) -------------------------------------------------------

    async def get_member(self, guild_id: int, user_id: int) -> Member:
        async with self._sessions() as s:
            row = await s.get(MemberRow, (guild_id, user_id))
            return _member(row) if row else Member(guild_id=guild_id, user_id=user_id)

    async def _update_member(self, guild_id: int, user_id: int, **values: Any) -> Member:
        async with self._sessions() as s:
            row = await s.get(MemberRow, (guild_id, user_id))
            if row is None:
                row = MemberRow(guild_id=guild_id, user_id=user_id, banned=False)
                s.add(row)
            for key, value in values.items():
                setattr(row, key, value)
            await s.commit()
            return _member(row)

    async def set_member_ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        banned: bool,
        reason: str | None,
        until: datetime | None,
    ) -> Member:
        return await self._update_member(
            guild_id,
            user_id,
            banned=banned,
            ban_reason=reason if banned else None,
            banned_until=until if banned else None,
        )

    async def set_member_quota(
        self, guild_id: int, user_id: int, daily_quota: int | None
    ) -> Member:
        return await self._update_member(guild_id, user_id, daily_quota=daily_quota)

    # -- guilds --------------------------------------------------------------------------------

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        async with self._sessions() as s:
            row = await s.get(GuildRow, guild_id)
            return GuildSettings.from_dict(row.settings if row else None)

    async def save_guild_settings(self, guild_id: int, settings: GuildSettings) -> GuildSettings:
        async with self._sessions() as s:
            row = await s.get(GuildRow, guild_id)
            if row is None:
                s.add(GuildRow(id=guild_id, settings=settings.to_dict()))
            else:
                row.settings = settings.to_dict()
            await s.commit()
            return settings

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(
        self, new: NewJob, *, admit: Admit | None = None, since: datetime | None = None
    ) -> tuple[Job, bool]:
        """Record a job. With a ``request_key`` already used, return that job and False.

        With ``admit``, the job is recorded only if ``admit(unfinished jobs, images they
        reserve, images charged since ``since``)`` returns; what it raises leaves nothing written.
        Admissions of one user are serialised across processes: the user's row is written first,
        which holds SQLite's write lock (or Postgres's row lock) until the commit, so two
        processes cannot both see room for one more job."""
        spec = new.spec
        now = utcnow()
        row = JobRow(
            user_id=new.user_id,
            guild_id=new.guild_id,
            channel_id=new.channel_id,
            kind=new.kind.value,
            parent_job_id=new.parent_job_id,
            parent_index=new.parent_index,
            init_image_path=new.init_image_path,
            prompt=spec.prompt,
            negative_prompt=spec.negative,
            model=new.model,
            width=spec.width,
            height=spec.height,
            aspect=f"{spec.aspect[0]}:{spec.aspect[1]}",
            seed=spec.seed,
            steps=spec.steps,
            guidance=spec.guidance,
            sampler=spec.sampler,
            strength=spec.strength,
            tile=spec.tile,
            count=spec.count,
            loras=[[name, weight] for name, weight in spec.loras],
            repro={},
            state=new.state.value,
            error=new.error,
            attempts=0,
            charged_images=0,
            request_key=new.request_key,
            from_photo=new.from_photo,
            age_restricted=new.age_restricted,
            private=new.private,
            runner=new.runner,
            params=dict(new.params),
            created_at=now,
            finished_at=now if new.state.finished else None,
        )
        async with self._sessions() as s:
            if admit is not None:
                await s.execute(
                    update(UserRow).where(UserRow.id == new.user_id).values(id=UserRow.id)
                )
                if new.request_key is not None:
                    existing = await s.scalar(
                        select(JobRow).where(JobRow.request_key == new.request_key)
                    )
                    if existing is not None:
                        return _job(existing), False
                unfinished, reserved = (await s.execute(_pending(new.user_id))).one()
                used = await s.scalar(_charged_since(new.user_id, since or utcnow()))
                admit(int(unfinished), int(reserved), int(used or 0))
            s.add(row)
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()
                if new.request_key is None:
                    raise
                existing = await s.scalar(
                    select(JobRow).where(JobRow.request_key == new.request_key)
                )
                if existing is None:
                    raise
                return _job(existing), False
            return _job(row), True

    async def latest_request(self, base: str) -> tuple[Job | None, int]:
        """The latest job made by presses of one button (request keys ``base#0``, ``base#1``
        ...), and how many there were."""
        # A range, not LIKE: LIKE ignores case in SQLite, and "vs" (subtle) and "vS" (strong)
        # are different buttons. Keys of this base sort between "base#" and "base$".
        query = select(JobRow).where(
            JobRow.request_key >= f"{base}#", JobRow.request_key < f"{base}$"
        )
        async with self._sessions() as s:
            rows = list(await s.scalars(query.order_by(JobRow.id.desc())))
            return (_job(rows[0]) if rows else None), len(rows)

    async def find_job_by_request_key(self, key: str) -> Job | None:
        async with self._sessions() as s:
            row = await s.scalar(select(JobRow).where(JobRow.request_key == key))
            return None if row is None else _job(row)

    async def get_job(self, job_id: int) -> Job:
        async with self._sessions() as s:
            row = await s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job #{job_id}.")
            return _job(row)

    async def mark_running(self, job_id: int) -> Job:
        """queued → running, counting the attempt. A job in any other state is left alone
        (one UPDATE with the state in its WHERE, so it never undoes a concurrent cancel)."""
        async with self._sessions() as s:
            await s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.QUEUED.value)
                .values(
                    state=JobState.RUNNING.value,
                    attempts=JobRow.attempts + 1,
                    started_at=utcnow(),
                )
            )
            await s.commit()
        return await self.get_job(job_id)

    async def finish_job(
        self,
        job_id: int,
        state: JobState,
        *,
        error: str | None = None,
        repro: dict[str, Any] | None = None,
        images: Sequence[NewImage] = (),
        charged: int = 0,
    ) -> Job:
        """Move an unfinished job to a final state, with its images, in one transaction.

        ``charged`` images (the core decides how many) go on the job and into the quota's
        ledger. A job that is already finished (cancelled meanwhile, say) is returned unchanged
        and nothing is written: callers compare the returned state with theirs.
        """
        values: dict[str, Any] = {
            "state": state.value,
            "error": error,
            "finished_at": utcnow(),
            "charged_images": charged,
        }
        if repro is not None:
            values["repro"] = repro
        async with self._sessions() as s:
            result = await s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(UNFINISHED))
                .values(**values)
            )
            if result.rowcount == 1 and values["charged_images"]:
                job = await s.get(JobRow, job_id)
                assert job is not None
                s.add(
                    ImageUsageRow(
                        user_id=job.user_id, guild_id=job.guild_id, images=values["charged_images"]
                    )
                )
            if result.rowcount == 1:
                s.add_all(
                    ImageRow(
                        job_id=job_id,
                        index=image.index,
                        seed=image.seed,
                        width=image.width,
                        height=image.height,
                        path=image.path,
                        sha256=image.sha256,
                        withheld=image.withheld,
                    )
                    for image in images
                )
            await s.commit()
        return await self.get_job(job_id)

    async def unreferenced(self, paths: Iterable[str]) -> list[str]:
        """Of these files, the ones no image or job refers to (safe to delete)."""
        async with self._sessions() as s:
            return await self._unreferenced(s, paths)

    async def requeue(self, job_id: int, *, runner: str | None = None) -> Job:
        return await self._update_job(
            job_id, state=JobState.QUEUED.value, started_at=None, runner=runner
        )

    async def set_message(self, job_id: int, *, channel_id: int | None, message_id: int) -> Job:
        """The message that shows this job (edited in place later), recorded among its copies."""
        if channel_id is not None:
            await self.add_message(job_id, channel_id=channel_id, message_id=message_id)
        return await self._update_job(job_id, channel_id=channel_id, message_id=message_id)

    async def add_message(self, job_id: int, *, channel_id: int, message_id: int) -> None:
        """Record a message the job's images were posted in (once per message)."""
        async with self._sessions() as s:
            exists = await s.scalar(
                select(JobMessageRow.id).where(JobMessageRow.message_id == message_id)
            )
            if exists is None:
                s.add(JobMessageRow(job_id=job_id, channel_id=channel_id, message_id=message_id))
                try:
                    await s.commit()
                except IntegrityError:  # recorded meanwhile, or the job is gone
                    await s.rollback()

    async def job_messages(self, job_id: int) -> list[tuple[int, int]]:
        """(channel id, message id) of every message the job's images were posted in."""
        async with self._sessions() as s:
            rows = await s.execute(
                select(JobMessageRow.channel_id, JobMessageRow.message_id)
                .where(JobMessageRow.job_id == job_id)
                .order_by(JobMessageRow.id)
            )
            return [(int(c), int(m)) for c, m in rows]

    async def remove_message(self, message_id: int) -> None:
        async with self._sessions() as s:
            await s.execute(delete(JobMessageRow).where(JobMessageRow.message_id == message_id))
            await s.commit()

    async def job_of_message(self, message_id: int) -> int | None:
        async with self._sessions() as s:
            return await s.scalar(
                select(JobMessageRow.job_id).where(JobMessageRow.message_id == message_id)
            )

    async def set_delivery_error(self, job_id: int, error: str | None) -> Job:
        return await self._update_job(job_id, delivery_error=error)

    async def set_runner(self, job_id: int, runner: str | None) -> Job:
        return await self._update_job(job_id, runner=runner)

    async def _update_job(self, job_id: int, **values: Any) -> Job:
        async with self._sessions() as s:
            row = await s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job #{job_id}.")
            for key, value in values.items():
                setattr(row, key, value)
            await s.commit()
            return _job(row)

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        states: Sequence[JobState] | None = None,
        search: str | None = None,
        limit: int = 10,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Job]:
        query = select(JobRow)
        if user_id is not None:
            query = query.where(JobRow.user_id == user_id)
        if guild_id is not None:
            query = query.where(JobRow.guild_id == guild_id)
        if states is not None:
            query = query.where(JobRow.state.in_([s.value for s in states]))
        if search:
            query = query.where(
                JobRow.prompt.ilike(f"%{_like_escape(search)}%", escape="\\"),
            )
        order = JobRow.id.asc() if oldest_first else JobRow.id.desc()
        query = query.order_by(order).limit(limit).offset(offset)
        async with self._sessions() as s:
            return [_job(r) for r in await s.scalars(query)]

    async def count_jobs(self, *, user_id: int | None = None, search: str | None = None) -> int:
        query = select(func.count(JobRow.id))
        if user_id is not None:
            query = query.where(JobRow.user_id == user_id)
        if search:
            query = query.where(JobRow.prompt.ilike(f"%{_like_escape(search)}%", escape="\\"))
        async with self._sessions() as s:
            return int(await s.scalar(query) or 0)

    async def unfinished_jobs(self) -> list[Job]:
        return await self.list_jobs(
            states=[JobState.QUEUED, JobState.RUNNING], limit=10_000, oldest_first=True
        )

    async def images_charged_since(self, user_id: int, since: datetime) -> int:
        """Images delivered to this user since ``since`` (the quota's "used today"), from the
        ledger, which outlives the jobs."""
        async with self._sessions() as s:
            return int(await s.scalar(_charged_since(user_id, since)) or 0)

    async def pending(self, user_id: int) -> tuple[int, int]:
        """This user's queued and running jobs, and the images they will make (reserved
        against the quota), in one query."""
        async with self._sessions() as s:
            jobs, images = (await s.execute(_pending(user_id))).one()
            return int(jobs), int(images)

    async def job_stats(self, since: datetime, guild_id: int | None = None) -> dict[str, Any]:
        query = select(JobRow.state, JobRow.started_at, JobRow.finished_at, JobRow.charged_images)
        query = query.where(JobRow.created_at >= since)
        if guild_id is not None:
            query = query.where(JobRow.guild_id == guild_id)
        async with self._sessions() as s:
            rows = (await s.execute(query)).all()
        durations = sorted(
            (f - st).total_seconds()
            for state, st, f, _ in rows
            if state == JobState.DONE.value and st and f
        )
        by_state: dict[str, int] = {}
        for state, *_ in rows:
            by_state[state] = by_state.get(state, 0) + 1
        return {
            "jobs": len(rows),
            "by_state": by_state,
            "images": sum(r[3] for r in rows),
            "durations": durations,
        }

    async def purge_job(self, job_id: int) -> list[str]:
        """Mark the job's images deleted; return the files nobody else uses."""
        async with self._sessions() as s:
            row = await s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job #{job_id}.")
            await s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(UNFINISHED))
                .values(state=JobState.CANCELLED.value, finished_at=utcnow())
            )
            paths = set(await s.scalars(select(ImageRow.path).where(ImageRow.job_id == job_id)))
            await s.execute(update(ImageRow).where(ImageRow.job_id == job_id).values(deleted=True))
            await s.commit()
            return await self._unreferenced(s, paths)

    # -- images --------------------------------------------------------------------------------

    async def get_images(self, job_id: int) -> list[Image]:
        async with self._sessions() as s:
            rows = await s.scalars(
                select(ImageRow).where(ImageRow.job_id == job_id).order_by(ImageRow.index)
            )
            return [_image(r) for r in rows]

    async def get_image(self, job_id: int, index: int) -> Image:
        async with self._sessions() as s:
            row = await s.scalar(
                select(ImageRow).where(ImageRow.job_id == job_id, ImageRow.index == index)
            )
            if row is None or row.deleted:
                raise NotFound(f"Job #{job_id} has no image {index + 1}.")
            return _image(row)

    # -- blocklist -----------------------------------------------------------------------------

    async def add_block_term(self, guild_id: int | None, term: str, created_by: str) -> None:
        async with self._sessions() as s:
            s.add(BlocklistEntryRow(guild_id=guild_id, term=term, created_by=created_by))
            try:
                await s.commit()
            except IntegrityError:
                raise InvalidInput(f"'{term}' is already on the blocklist.") from None

    async def remove_block_term(self, guild_id: int | None, term: str) -> None:
        async with self._sessions() as s:
            result = await s.execute(
                delete(BlocklistEntryRow).where(
                    BlocklistEntryRow.guild_id.is_(None)
                    if guild_id is None
                    else BlocklistEntryRow.guild_id == guild_id,
                    BlocklistEntryRow.term == term,
                )
            )
            await s.commit()
            if result.rowcount == 0:
                raise NotFound(f"'{term}' is not on the blocklist.")

    async def list_block_terms(self, guild_id: int | None) -> list[BlocklistEntry]:
        """This server's entries and the ones that apply everywhere."""
        cond = BlocklistEntryRow.guild_id.is_(None)
        if guild_id is not None:
            cond = or_(cond, BlocklistEntryRow.guild_id == guild_id)
        async with self._sessions() as s:
            rows = await s.scalars(
                select(BlocklistEntryRow).where(cond).order_by(BlocklistEntryRow.term)
            )
            return [
                BlocklistEntry(
                    id=r.id,
                    guild_id=r.guild_id,
                    term=r.term,
                    created_by=r.created_by,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    # -- audit ---------------------------------------------------------------------------------

    async def add_audit(
        self,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        guild_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEvent:
        async with self._sessions() as s:
            row = AuditEventRow(
                actor=actor,
                action=action,
                target=target,
                reason=reason,
                guild_id=guild_id,
                detail=detail or {},
            )
            s.add(row)
            await s.commit()
            return _audit(row)

    async def list_audit(
        self, *, guild_id: int | None = None, limit: int = 20, action: str | None = None
    ) -> list[AuditEvent]:
        query = select(AuditEventRow).order_by(AuditEventRow.id.desc()).limit(limit)
        if guild_id is not None:
            query = query.where(AuditEventRow.guild_id == guild_id)
        if action is not None:
            query = query.where(AuditEventRow.action == action)
        async with self._sessions() as s:
            return [_audit(r) for r in await s.scalars(query)]
