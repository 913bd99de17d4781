"""packages and receipts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:39:13.321070
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('packages',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('body_id', sa.String(length=64), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reference', sa.Text(), nullable=True),
    sa.Column('purpose', sa.Text(), nullable=True),
    sa.Column('confidential_reference', sa.Boolean(), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('envelope_sha256', sa.String(length=64), nullable=False),
    sa.Column('payload_sha256', sa.String(length=64), nullable=False),
    sa.Column('payload_size', sa.BigInteger(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_size', sa.BigInteger(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('checkpoint_size', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outbox', sa.Text(), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['body_id'], ['bodies.id'], name=op.f('fk_packages_body_id_bodies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_packages'))
    )
    with op.batch_alter_table('packages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_packages_body_id'), ['body_id'], unique=False)

    op.create_table('package_items',
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('item_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('bag_path', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_package_items_item_id_items')),
    sa.ForeignKeyConstraint(['package_id'], ['packages.id'], name=op.f('fk_package_items_package_id_packages')),
    sa.PrimaryKeyConstraint('package_id', 'item_id', name=op.f('pk_package_items'))
    )
    with op.batch_alter_table('package_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_package_items_item_id'), ['item_id'], unique=False)

    op.create_table('package_recipients',
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('age_recipient', sa.String(length=100), nullable=False),
    sa.Column('escrow', sa.Boolean(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['package_id'], ['packages.id'], name=op.f('fk_package_recipients_package_id_packages')),
    sa.PrimaryKeyConstraint('package_id', 'fingerprint', name=op.f('pk_package_recipients'))
    )
    op.create_table('receipts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('body_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('document', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['body_id'], ['bodies.id'], name=op.f('fk_receipts_body_id_bodies')),
    sa.ForeignKeyConstraint(['package_id'], ['packages.id'], name=op.f('fk_receipts_package_id_packages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receipts'))
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipts_body_id'), ['body_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_receipts_package_id'), ['package_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipts_package_id'))
        batch_op.drop_index(batch_op.f('ix_receipts_body_id'))

    op.drop_table('receipts')
    op.drop_table('package_recipients')
    with op.batch_alter_table('package_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_package_items_item_id'))

    op.drop_table('package_items')
    with op.batch_alter_table('packages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_packages_body_id'))

    op.drop_table('packages')
