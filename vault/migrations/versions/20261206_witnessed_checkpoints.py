"""witnessed checkpoints: this log's checkpoints as bodies cosigned them in acknowledgements

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('witnessed_checkpoints',
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('body_id', sa.String(length=64), nullable=False),
    sa.Column('cosigner', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('cosigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['body_id'], ['bodies.id'], name=op.f('fk_witnessed_checkpoints_body_id_bodies')),
    sa.ForeignKeyConstraint(['package_id'], ['packages.id'], name=op.f('fk_witnessed_checkpoints_package_id_packages')),
    sa.PrimaryKeyConstraint('package_id', name=op.f('pk_witnessed_checkpoints'))
    )
    with op.batch_alter_table('witnessed_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_witnessed_checkpoints_body_id'), ['body_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('witnessed_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_witnessed_checkpoints_body_id'))

    op.drop_table('witnessed_checkpoints')
