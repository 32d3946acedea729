"""tus concatenation: partial / final uploads, a final's parts, the final that claimed a partial

Revision ID: 0004_concat
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_concat"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("concat", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("concat_parts", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("concat_into", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("concat_into")
        batch_op.drop_column("concat_parts")
        batch_op.drop_column("concat")
