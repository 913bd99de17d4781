"""checkpoint timestamps: RFC 3161 tokens over signed checkpoints, and pending ones

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00

A checkpoint signed while no configured TSA answered is marked ``timestamp_pending``;
``evault timestamp --pending`` obtains its tokens later. Checkpoints signed before this
revision have no tokens and are not pending (no TSA was asked for them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timestamp_pending', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table('checkpoint_timestamps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=False),
    sa.Column('tsa', sa.String(length=64), nullable=False),
    sa.Column('attested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token', sa.LargeBinary(), nullable=False),
    sa.Column('obtained_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_checkpoint_timestamps_checkpoint_id_checkpoints')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoint_timestamps'))
    )
    with op.batch_alter_table('checkpoint_timestamps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_checkpoint_timestamps_checkpoint_id'), ['checkpoint_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('checkpoint_timestamps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoint_timestamps_checkpoint_id'))
    op.drop_table('checkpoint_timestamps')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_column('timestamp_pending')
