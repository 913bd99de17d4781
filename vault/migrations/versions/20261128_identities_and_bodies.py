"""identities and bodies

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 00:25:57.297202
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bodies',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bodies'))
    )
    op.create_table('identities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('org', sa.String(length=200), nullable=True),
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identities')),
    sa.UniqueConstraint('name', name=op.f('uq_identities_name'))
    )
    op.create_table('body_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('body_id', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('signing_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('age_recipient', sa.String(length=100), nullable=False),
    sa.Column('card', sa.Text(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['body_id'], ['bodies.id'], name=op.f('fk_body_keys_body_id_bodies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_body_keys')),
    sa.UniqueConstraint('body_id', 'fingerprint', name=op.f('uq_body_keys_body_id'))
    )
    with op.batch_alter_table('body_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_body_keys_body_id'), ['body_id'], unique=False)

    op.create_table('identity_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=False),
    sa.Column('signing_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('age_recipient', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_identity_keys_identity_id_identities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_keys')),
    sa.UniqueConstraint('age_recipient', name=op.f('uq_identity_keys_age_recipient')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_identity_keys_fingerprint'))
    )
    with op.batch_alter_table('identity_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identity_keys_identity_id'), ['identity_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('identity_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identity_keys_identity_id'))

    op.drop_table('identity_keys')
    with op.batch_alter_table('body_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_body_keys_body_id'))

    op.drop_table('body_keys')
    op.drop_table('identities')
    op.drop_table('bodies')
