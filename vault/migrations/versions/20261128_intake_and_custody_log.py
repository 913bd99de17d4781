"""intake and custody log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:38:13.770386
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The empty tree: RFC 9162's root of no leaves is SHA-256 of the empty string, and an empty
# frontier is its size (0) as 8 bytes and no hashes.
EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
EMPTY_FRONTIER = bytes(8)

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('stored_size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blobs'))
    )
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blobs_sha256'), ['sha256'], unique=False)

    op.create_table('cases',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases'))
    )
    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('signer', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints'))
    )
    op.create_table('custody_events',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(length=64), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_custody_events'))
    )
    with op.batch_alter_table('custody_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_custody_events_subject'), ['subject'], unique=False)

    op.create_table('custody_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('frontier', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custody_head'))
    )
    head = sa.table(
        "custody_head",
        sa.column("id", sa.Integer),
        sa.column("size", sa.BigInteger),
        sa.column("root", sa.LargeBinary),
        sa.column("frontier", sa.LargeBinary),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "root": EMPTY_ROOT, "frontier": EMPTY_FRONTIER}])
    op.create_table('vault_keys',
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('age_recipient', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('purpose', name=op.f('pk_vault_keys'))
    )
    op.create_table('items',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('original_name', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('collected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('location', sa.Text(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ingested_by', sa.String(length=64), nullable=False),
    sa.Column('intake_seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], name=op.f('fk_items_blob_id_blobs')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_items_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items')),
    sa.UniqueConstraint('intake_seq', name=op.f('uq_items_intake_seq'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_items_blob_id'), ['blob_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_case_id'), ['case_id'], unique=False)

    op.create_table('item_digests',
    sa.Column('item_id', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('hexdigest', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_digests_item_id_items')),
    sa.PrimaryKeyConstraint('item_id', 'algorithm', name=op.f('pk_item_digests'))
    )
    op.create_table('item_labels',
    sa.Column('item_id', sa.String(length=32), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_labels_item_id_items')),
    sa.PrimaryKeyConstraint('item_id', 'label', name=op.f('pk_item_labels'))
    )
    with op.batch_alter_table('item_labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_labels_label'), ['label'], unique=False)

    op.create_table('item_tags',
    sa.Column('item_id', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_tags_item_id_items')),
    sa.PrimaryKeyConstraint('item_id', 'key', name=op.f('pk_item_tags'))
    )


def downgrade() -> None:
    op.drop_table('item_tags')
    with op.batch_alter_table('item_labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_labels_label'))

    op.drop_table('item_labels')
    op.drop_table('item_digests')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_case_id'))
        batch_op.drop_index(batch_op.f('ix_items_blob_id'))

    op.drop_table('items')
    op.drop_table('vault_keys')
    op.drop_table('custody_head')
    with op.batch_alter_table('custody_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_custody_events_subject'))

    op.drop_table('custody_events')
    op.drop_table('checkpoints')
    op.drop_table('cases')
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blobs_sha256'))

    op.drop_table('blobs')
