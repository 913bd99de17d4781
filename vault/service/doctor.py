"""``evault doctor``: what the vault is made of and whether it is healthy.

>>> report = diagnose(Path("./office-vault"))   # doctest: +SKIP
>>> report["key_store"]                          # doctest: +SKIP
'file'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from vault.keystore import choose
from vault.service.vaults import open_vault
from vault.store import db
from vault.store.models import Body, Identity


def diagnose(vault_dir: Path | str | None) -> dict[str, Any]:
    """A report of the vault's parts; raises only if the vault cannot be opened at all."""
    v = open_vault(vault_dir, check_schema=False)
    try:
        revision = db.current_revision(v.engine)
        head = db.head_revision()
        choice = choose(v.config.key_storage)
        report: dict[str, Any] = {
            "vault": str(v.root),
            "vault_id": v.config.vault_id,
            "database": v.engine.url.render_as_string(hide_password=True),
            "schema": revision,
            "schema_ok": revision == head,
            "key_store": choice.kind,
            "key_store_reason": choice.reason,
        }
        if revision == head:
            with v.transaction() as session:
                report["identities"] = session.scalar(select(func.count()).select_from(Identity))
                report["bodies"] = session.scalar(select(func.count()).select_from(Body))
        return report
    finally:
        v.close()
