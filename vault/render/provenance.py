"""One line for people on what an evidence file says of its own provenance.

    >>> describe_c2pa({"state": "none", "checker": "c2pa-rs 0.91.3"})
    'none: no C2PA manifest, unknown provenance (checked by c2pa-rs 0.91.3)'
    >>> describe_proofmode({"state": "unreadable", "reason": "bad CRC", "parts": [{}]})
    'unreadable: the bundle could not be read (bad CRC) (1 parts; OpenPGP signatures not verified)'

The findings are the signed ``item.ingested`` event's (:mod:`vault.formats.provenance`);
``items show --json`` prints them whole.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe_c2pa", "describe_proofmode"]


def _signer(finding: dict[str, Any]) -> str:
    said = [f"issuer {finding['issuer']}" if finding.get("issuer") else "",
            f"serial {finding['serial']}" if finding.get("serial") else "",
            f"made with {finding['generator']}" if finding.get("generator") else "",
            f"signed at {finding['signed_at']}" if finding.get("signed_at") else ""]
    return "; ".join(s for s in said if s)


def describe_c2pa(finding: dict[str, Any]) -> str:
    """``state: what it means (signer; checker)`` for a C2PA finding."""
    state = finding.get("state")
    codes = ", ".join(finding.get("codes") or [])
    meaning = {
        "trusted": "manifest intact, its signer chains to a configured trust anchor",
        "valid": "manifest intact, but its signer is not among the trust anchors"
                 + ("" if finding.get("anchors") else " (none configured)"),
        "invalid": f"manifest fails its checks ({codes or 'no code given'})"
                   + (f": {finding['reason']}" if finding.get("reason") else ""),
        "none": "no C2PA manifest, unknown provenance",
        "unchecked": f"the check could not be completed ({finding.get('reason', 'no reason')})",
    }.get(str(state), f"state not known to this version ({codes})")
    about = "; ".join(s for s in (_signer(finding),
                                  f"checked by {finding.get('checker', 'an unnamed checker')}")
                      if s)
    return f"{state}: {meaning} ({about})"


def describe_proofmode(finding: dict[str, Any]) -> str:
    """``state: what it means (parts; signatures)`` for a ProofMode finding."""
    state = finding.get("state")
    proofs = finding.get("proofs", 0)
    meaning = {
        "consistent": f"each of the bundle's {proofs} proof(s) names the SHA-256 of a media "
                      "file in it",
        "mismatch": f"{finding.get('reason', 'a proof does not match its media')}",
        "unreadable": f"the bundle could not be read ({finding.get('reason', 'no reason')})",
    }.get(str(state), "state not known to this version")
    parts = finding.get("parts")
    extra = [f"{len(parts)} parts" if isinstance(parts, list) else "",
             f"OpenPGP signatures {finding.get('signatures', 'not verified')}"]
    return f"{state}: {meaning} ({'; '.join(s for s in extra if s)})"
