"""The schema. Singular snake_case tables, ``_at`` timestamps (UTC), explicit constraint names.

Any change here needs an Alembic migration (``tests/test_store.py`` checks for drift).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Alembic's recommended convention, so every constraint has a predictable, revertable name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; SQLite has no time zones, so store naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Ids are handed out once: a deleted row's id is never given to a new one (SQLite reuses the
# largest rowid after a delete unless the table is AUTOINCREMENT), so an old button or command
# naming a deleted job can never reach someone else's.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class UserRow(Base):
    """A person Easel knows. /forget-me clears the name and settings but keeps the row: the
    bans and quota overrides on it (and on their member rows) are enforcement, not personal data."""

    __tablename__ = "user"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    ban_reason: Mapped[str | None] = mapped_column(Text)
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    daily_quota: Mapped[int | None] = mapped_column(Integer)
    quota_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberRow(Base):
    """A user as seen by one server: that server's ban and quota override."""

    __tablename__ = "member"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    ban_reason: Mapped[str | None] = mapped_column(Text)
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    daily_quota: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GuildRow(Base):
    __tablename__ = "guild"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class JobRow(Base):
    __tablename__ = "job"
    __table_args__ = (
        # "Images this user made today" and "this user's recent jobs".
        Index("ix_job_user_id_created_at", "user_id", "created_at"),
        Index("ix_job_state", "state"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    parent_job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    parent_index: Mapped[int | None] = mapped_column(Integer)
    init_image_path: Mapped[str | None] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(300))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    aspect: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    sampler: Mapped[str] = mapped_column(String(32))
    strength: Mapped[float | None] = mapped_column(Float)
    tile: Mapped[bool] = mapped_column(Boolean, default=False)
    count: Mapped[int] = mapped_column(Integer)
    # [[name, weight], ...] in the order applied.
    loras: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # What exact reproduction needs: model identity, scheduler config, dtype, device, versions.
    repro: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    charged_images: Mapped[int] = mapped_column(Integer, default=0)
    # Makes a double click one job: the adapter derives it from the button and the presser.
    request_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # Decided once, when the job is made, and inherited by every job made from its images:
    # derived from an uploaded photo (the hard limits on photos hold for all descendants, whoever
    # owns them, whatever is deleted later), made where age-restricted content was allowed (shown
    # only where it still is), and a private result (shown only to its owner).
    from_photo: Mapped[bool] = mapped_column(Boolean, default=False)
    age_restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    # Which process runs it ("bot:<host>:<pid>:<start>", "cli:..."), so a process that died is told
    # from one still running, and a bot never picks up a job made at the command line.
    runner: Mapped[str | None] = mapped_column(String(120))
    # Parameters particular to the job's kind (mask, zoom factor, LoRA set...), as JSON.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Why its result could not be delivered (Discord refused every way), so delivery stops trying.
    delivery_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImageRow(Base):
    __tablename__ = "image"
    __table_args__ = (UniqueConstraint("job_id", "index"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    withheld: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobMessageRow(Base):
    """Every Discord message a job's images were posted in (the result, U copies, /show), so a
    purge can delete them all."""

    __tablename__ = "job_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageUsageRow(Base):
    """The quota's ledger: images charged to a user, when, and counts only (no prompt, no image),
    so deleting a user's jobs (/forget-me, purge) never gives their day's images back."""

    __tablename__ = "image_usage"
    __table_args__ = (Index("ix_image_usage_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    images: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlocklistEntryRow(Base):
    __tablename__ = "blocklist_entry"
    __table_args__ = (
        UniqueConstraint("guild_id", "term"),
        # NULLs are distinct in a unique constraint (SQLite and Postgres alike), so a term
        # blocked everywhere needs its own index to be stored once.
        Index(
            "uq_blocklist_entry_term_everywhere",
            "term",
            unique=True,
            sqlite_where=text("guild_id IS NULL"),
            postgresql_where=text("guild_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)  # None: applies everywhere
    term: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEventRow(Base):
    __tablename__ = "audit_event"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
