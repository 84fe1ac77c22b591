"""Keep enforcement apart from personal data; never reuse ids.

- user, job, image, audit_event become AUTOINCREMENT on SQLite, so a deleted row's id is never
  handed out again (an old button naming a deleted job can never reach a new one).
- job gains what is decided once when it is made and inherited by its descendants (from_photo,
  age_restricted, private), the process running it (runner), kind-specific params, and
  delivery_error.
- image_usage: the quota's ledger (counts and times only), filled from the jobs' charged images.
- job_message: every message a job's images were posted in, filled from job.message_id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 06:00:00.000000
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUTOINCREMENT_TABLES = ("user", "job", "image", "audit_event")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _recreate(table: str, *, autoincrement: bool):
    # SQLite needs the table copied to become AUTOINCREMENT (bot.store.db turns foreign keys off
    # around migrations, so the copy's DROP TABLE cascades nothing); elsewhere ids are sequences
    # that never go back, and columns are added in place.
    if _sqlite():
        return op.batch_alter_table(
            table,
            recreate="always",
            table_kwargs={"sqlite_autoincrement": autoincrement},
        )
    return op.batch_alter_table(table)


def upgrade() -> None:
    for table in ("user", "image", "audit_event"):
        with _recreate(table, autoincrement=True):
            pass
    with _recreate("job", autoincrement=True) as batch:
        batch.add_column(
            sa.Column("from_photo", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("age_restricted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("runner", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))

    op.create_table(
        "job_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_message_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_message")),
        sa.UniqueConstraint("message_id", name=op.f("uq_job_message_message_id")),
    )
    op.create_index(op.f("ix_job_message_job_id"), "job_message", ["job_id"], unique=False)
    op.create_table(
        "image_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_image_usage_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_usage")),
    )
    op.create_index(
        "ix_image_usage_user_id_created_at", "image_usage", ["user_id", "created_at"], unique=False
    )
    _fill()


def _fill() -> None:
    """What the new columns and tables would hold had they always existed."""
    bind = op.get_bind()
    job = sa.table(
        "job",
        sa.column("id", sa.Integer),
        sa.column("user_id", sa.Integer),
        sa.column("guild_id", sa.BigInteger),
        sa.column("channel_id", sa.BigInteger),
        sa.column("message_id", sa.BigInteger),
        sa.column("parent_job_id", sa.Integer),
        sa.column("init_image_path", sa.String),
        sa.column("charged_images", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("from_photo", sa.Boolean),
        sa.column("age_restricted", sa.Boolean),
        sa.column("private", sa.Boolean),
    )
    user = sa.table("user", sa.column("id", sa.Integer), sa.column("settings", sa.JSON))
    guild = sa.table("guild", sa.column("id", sa.BigInteger), sa.column("settings", sa.JSON))

    def settings(value: object) -> dict:
        return json.loads(value) if isinstance(value, str) else dict(value or {})

    private_users = {
        row.id for row in bind.execute(sa.select(user)) if settings(row.settings).get("private")
    }
    # Which channels allowed age-restricted content is not recorded; a server that allowed it
    # may have, so its jobs count as age-restricted (too strict at worst, never too loose).
    nsfw_guilds = {
        row.id
        for row in bind.execute(sa.select(guild))
        if settings(row.settings).get("nsfw_rule") == "age_restricted"
    }
    photo: dict[int, bool] = {}
    usage, messages = [], []
    for row in bind.execute(sa.select(job).order_by(job.c.id)):
        from_photo = bool(row.init_image_path and row.init_image_path.startswith("uploads/"))
        from_photo = from_photo or photo.get(row.parent_job_id, False)
        photo[row.id] = from_photo
        values = {
            "from_photo": from_photo,
            "age_restricted": row.guild_id in nsfw_guilds,
            "private": row.guild_id is not None and row.user_id in private_users,
        }
        if any(values.values()):
            bind.execute(sa.update(job).where(job.c.id == row.id).values(**values))
        if row.charged_images:
            usage.append(
                {
                    "user_id": row.user_id,
                    "guild_id": row.guild_id,
                    "images": row.charged_images,
                    "created_at": row.created_at,
                }
            )
        if row.message_id and row.channel_id:
            messages.append(
                {
                    "job_id": row.id,
                    "channel_id": row.channel_id,
                    "message_id": row.message_id,
                    "created_at": row.created_at,
                }
            )
    if usage:
        op.bulk_insert(
            sa.table(
                "image_usage",
                sa.column("user_id", sa.Integer),
                sa.column("guild_id", sa.BigInteger),
                sa.column("images", sa.Integer),
                sa.column("created_at", sa.DateTime),
            ),
            usage,
        )
    if messages:
        op.bulk_insert(
            sa.table(
                "job_message",
                sa.column("job_id", sa.Integer),
                sa.column("channel_id", sa.BigInteger),
                sa.column("message_id", sa.BigInteger),
                sa.column("created_at", sa.DateTime),
            ),
            messages,
        )


def downgrade() -> None:
    op.drop_index("ix_image_usage_user_id_created_at", table_name="image_usage")
    op.drop_table("image_usage")
    op.drop_index(op.f("ix_job_message_job_id"), table_name="job_message")
    op.drop_table("job_message")
    with _recreate("job", autoincrement=False) as batch:
        for column in (
            "delivery_error",
            "params",
            "runner",
            "private",
            "age_restricted",
            "from_photo",
        ):
            batch.drop_column(column)
    for table in ("audit_event", "image", "user"):
        with _recreate(table, autoincrement=False):
            pass
