"""sealed metadata: case titles become Text, the sealed_metadata marker

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 02:50:00

Metadata columns are sealed at rest (``vault.store.sealed``): a sealed value is longer than
its plaintext, so ``cases.title`` loses its 500-character limit on PostgreSQL (SQLite never enforced it).
The values themselves are sealed by the first command that opens the key store, not here:
a migration cannot reach the key store. A database with no metadata value at all (a new
vault) gets its ``sealed_metadata`` row now; any other gets it from that first command.
Downgrading leaves sealed values sealed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

#: The sealed columns as of this revision (vault.store.sealed.SPECS), by table.
SEALED = {
    "cases": ("title",),
    "items": ("original_name", "title", "description", "source", "location"),
    "item_tags": ("value",),
    "packages": ("reference", "purpose"),
    "package_items": ("bag_path",),
    "receipts": ("document",),
    "received_packages": ("statement",),
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # SQLite enforces no length (and copying ``cases`` would trip the items' foreign keys).
        op.alter_column('cases', 'title', existing_type=sa.String(length=500), type_=sa.Text(),
                        existing_nullable=True)
    marker = op.create_table('sealed_metadata',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sealed_metadata'))
    )
    conn = op.get_bind()
    for table, columns in SEALED.items():
        where = " OR ".join(f"{c} IS NOT NULL" for c in columns)
        if conn.exec_driver_sql(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1").first():
            return
    op.bulk_insert(marker, [{"id": 1, "version": 1}])


def downgrade() -> None:
    op.drop_table('sealed_metadata')
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column('cases', 'title', existing_type=sa.Text(), type_=sa.String(length=500),
                        existing_nullable=True)
