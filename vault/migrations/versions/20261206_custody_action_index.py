"""custody events: an index on action

The key history (vault/service/keyhistory.py) reads only the events whose action is a key
action, before every command that encrypts or signs: with this index that is a few rows,
not a scan of the whole log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:55:00
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_custody_events_action'), 'custody_events', ['action'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_custody_events_action'), table_name='custody_events')
