"""contacts opening and acknowledgements

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:52:01.899577
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('org', sa.String(length=200), nullable=True),
    sa.Column('email', sa.String(length=200), nullable=True),
    sa.Column('signing_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('age_recipient', sa.String(length=100), nullable=False),
    sa.Column('card', sa.Text(), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_contacts_fingerprint'))
    )
    op.create_table('received_packages',
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('body_id', sa.String(length=64), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('envelope_sha256', sa.String(length=64), nullable=False),
    sa.Column('statement', sa.LargeBinary(), nullable=False),
    sa.Column('statement_signature', sa.Text(), nullable=False),
    sa.Column('statement_sha256', sa.String(length=64), nullable=False),
    sa.Column('custody_excerpt', sa.LargeBinary(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_by', sa.String(length=64), nullable=False),
    sa.Column('recipient_key', sa.String(length=64), nullable=False),
    sa.Column('out_dir', sa.Text(), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('package_id', name=op.f('pk_received_packages'))
    )
    op.create_table('acknowledgements',
    sa.Column('package_id', sa.String(length=32), nullable=False),
    sa.Column('signer', sa.String(length=64), nullable=False),
    sa.Column('document', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('document_sha256', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['package_id'], ['packages.id'], name=op.f('fk_acknowledgements_package_id_packages')),
    sa.PrimaryKeyConstraint('package_id', name=op.f('pk_acknowledgements')),
    sa.UniqueConstraint('document_sha256', name=op.f('uq_acknowledgements_document_sha256'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('received_from', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('source_package', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('source_item', sa.String(length=32), nullable=True))

    with op.batch_alter_table('packages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('statement_sha256', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('packages', schema=None) as batch_op:
        batch_op.drop_column('statement_sha256')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('source_item')
        batch_op.drop_column('source_package')
        batch_op.drop_column('received_from')

    op.drop_table('acknowledgements')
    op.drop_table('received_packages')
    op.drop_table('contacts')
