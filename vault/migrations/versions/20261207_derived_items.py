"""derived items: the original a redacted, translated, transcribed or excerpted copy was made
from, the relation, the tool and a note (sealed)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('derived_from', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('derivation', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('derivation_tool', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('derivation_note', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_items_derived_from'), ['derived_from'], unique=False)


def downgrade() -> None:
    # Not a batch (table copy): other tables refer to items, and SQLite would refuse to drop
    # the old copy. SQLite 3.35 and later drop a column in place, as PostgreSQL does.
    op.drop_index(op.f('ix_items_derived_from'), table_name='items')
    for column in ('derivation_note', 'derivation_tool', 'derivation', 'derived_from'):
        op.drop_column('items', column)
