"""body outboxes: a body's own outbox (a folder or an sftp:// drop), the pinned host key of
its SFTP server and the client key file for it (issue 20)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
# 0011 is being added by another branch at the same time; on this branch alone the chain
# is 0010 -> 0012 (see the note in the merge request): the merge sets 0011 here.
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bodies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outbox', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('outbox_host_key', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('outbox_identity_file', sa.Text(), nullable=True))


def downgrade() -> None:
    # Not a batch (table copy): body_keys and packages refer to bodies.
    for column in ('outbox_identity_file', 'outbox_host_key', 'outbox'):
        op.drop_column('bodies', column)
