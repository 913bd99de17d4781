"""derived items: the original's SHA-256 the link names, so that a link received in a
package (whose original this vault may not hold, or not yet) keeps its digest

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 09:00:00

A derived copy made here gets the SHA-256 its original had when the copy was ingested (the
digest its signed ``item.ingested`` event names); copies made before this revision get it
from their original's row, which has not changed since (an item's SHA-256 never does).
Received items had no link before this revision, so none is backfilled for them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('derived_from_sha256', sa.String(length=64),
                                      nullable=True))
    items = sa.table('items', sa.column('id', sa.String), sa.column('sha256', sa.String),
                     sa.column('derived_from', sa.String),
                     sa.column('derived_from_sha256', sa.String),
                     sa.column('received_from', sa.String))
    original = items.alias('original')
    op.execute(
        items.update()
        .where(items.c.derived_from.is_not(None), items.c.received_from.is_(None))
        .values(derived_from_sha256=sa.select(original.c.sha256)
                .where(original.c.id == items.c.derived_from)
                .scalar_subquery())
    )


def downgrade() -> None:
    # Not a batch (table copy): other tables refer to items, and SQLite would refuse to drop
    # the old copy. SQLite 3.35 and later drop a column in place, as PostgreSQL does.
    op.drop_column('items', 'derived_from_sha256')
