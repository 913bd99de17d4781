"""blob stores: where the vault's blobs live (a folder, or an S3 bucket shared by a team),
recorded in the database as well as in each machine's ``config.toml``; and, for blobs on S3,
the object version each blob was written as and the date its retention (Object Lock) ends

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 09:00:00

No row in ``vault_settings`` means what every vault before this revision had: the
``blobs/`` folder beside ``config.toml``. Blobs written before it have no version and no
retention.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vault_settings',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_vault_settings')),
    )
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version_id', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('retain_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('blobs', 'retain_until')
    op.drop_column('blobs', 'version_id')
    op.drop_table('vault_settings')
