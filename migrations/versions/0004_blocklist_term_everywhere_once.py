"""A term blocked everywhere (guild_id NULL) is stored once.

The unique constraint on (guild_id, term) treats NULLs as distinct, on SQLite and Postgres
alike; a partial unique index covers the NULL case. Duplicates already stored are merged first
(the oldest entry is kept).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM blocklist_entry WHERE guild_id IS NULL AND id NOT IN "
        "(SELECT MIN(id) FROM blocklist_entry WHERE guild_id IS NULL GROUP BY term)"
    )
    op.create_index(
        "uq_blocklist_entry_term_everywhere",
        "blocklist_entry",
        ["term"],
        unique=True,
        sqlite_where=sa.text("guild_id IS NULL"),
        postgresql_where=sa.text("guild_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_blocklist_entry_term_everywhere", table_name="blocklist_entry")
