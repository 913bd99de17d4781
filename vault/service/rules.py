"""Release rules: which bodies may receive items carrying a label.

    >>> add_rule(vault, "restricted-icc", ["ICC-OTP"], as_name="registry-office")  # doctest: +SKIP
    >>> release_verdict(["restricted-icc"], "UA-OPG", {"restricted-icc": ("ICC-OTP",)}, "deny")
    'label restricted-icc may go only to ICC-OTP (release rule)'

The rules live in ``config.toml`` (``[release_rules]`` and ``release_rules_default``) and fail
closed: a label without a rule goes to no body unless the default is ``allow``. Every change
made with ``evault rule`` is a signed ``rule.changed`` custody event carrying the whole
resulting rule set, so a rule changed by hand-editing ``config.toml`` no longer matches the
newest such event, and package build and export refuse until the edit is signed
(``evault rule sign``) or undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import utcnow
from vault.crypto.keys import VerifyKey
from vault.custody.events import Event
from vault.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    UsageError,
    VaultError,
    VerificationError,
)
from vault.names import LABEL, RELATIONS
from vault.service import keyhistory
from vault.service.bodies import get_body
from vault.service.custody import actor_pair, lock_head, origin, record
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import CustodyEvent, IdentityKey, ItemLabel
from vault.store.vaultdir import ORIGINAL, RULES_DEFAULT_CHOICES, load_config, write_config

ACTION = "rule.changed"
#: The subject of every ``rule.changed`` event: ``evault custody show release-rules``.
SUBJECT = "release-rules"

Rules = dict[str, tuple[str, ...]]
#: label -> body -> the derived copy (a relation, such as "redacted") that body gets instead of
#: the original; a body of the rule not named here gets the original.
Relations = dict[str, dict[str, str]]


@dataclass(frozen=True)
class RuleSet:
    """The release rules, the default for a label without a rule, and the bodies that get
    only a derived copy (``relations``)."""

    rules: Rules
    default: str = "deny"
    relations: Relations = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Canonical form, as signed: bodies sorted, labels sorted by the canonical JSON.
        ``relations`` appears only when a body gets a derived copy, so a rule set without one
        is signed as it was before relations existed."""
        out: dict[str, Any] = {
            "default": self.default,
            "rules": {label: sorted(bodies) for label, bodies in self.rules.items()}}
        if self.relations:
            out["relations"] = {label: dict(sorted(bodies.items()))
                                for label, bodies in self.relations.items()}
        return out

    def normal(self) -> RuleSet:
        """The same rules with each body list sorted and without repeats, and relations only
        for bodies of a rule."""
        rules = {k: tuple(sorted(set(v))) for k, v in self.rules.items()}
        relations = {label: {b: r for b, r in sorted(bodies.items()) if b in rules[label]}
                     for label, bodies in self.relations.items() if label in rules}
        return RuleSet(rules, self.default, {k: v for k, v in relations.items() if v})

    def copy_for(self, labels: Iterable[str], body_id: str) -> tuple[str, str] | None:
        """The derived copy a body must get of an item with ``labels`` instead of the
        original, as (label, relation), or None if the original may go. Two labels asking
        for different copies are refused (a PolicyError naming both)."""
        wanted: dict[str, str] = {}
        for label in labels:
            relation = self.relations.get(label, {}).get(body_id)
            if relation is not None:
                wanted.setdefault(relation, label)
        if len(wanted) > 1:
            (r1, l1), (r2, l2) = sorted(wanted.items())[:2]
            raise PolicyError(f"labels {l1} and {l2} ask for different copies for {body_id} "
                              f"({r1}, {r2}) (release rules); make one rule name one copy")
        return next(((label, relation) for relation, label in wanted.items()), None)


def a_copy(relation: str) -> str:
    """``a redacted copy``, ``an excerpt copy``: a relation in a sentence."""
    return f"{'an' if relation[0] in 'aeiou' else 'a'} {relation} copy"


def release_verdict(
    labels: Iterable[str], body_id: str, rules: Rules, default: str
) -> str | None:
    """None if an item with ``labels`` may go to ``body_id``; else why not, in one phrase."""
    for label in labels:
        allowed = rules.get(label)
        if allowed is None:
            if default == "allow":
                continue
            return (f"label {label} has no release rule, so it goes to no body; add one with "
                    f"`evault rule add {label} BODY`")
        if body_id not in allowed:
            where = "may go to no body" if not allowed else f"may go only to {', '.join(allowed)}"
            return f"label {label} {where} (release rule)"
    return None


def copy_verdict(labels: Iterable[str], derivation: str | None, body_id: str,
                 rules: RuleSet) -> str | None:
    """None if an item (a derived copy made by ``derivation``, or an original: None) with
    ``labels`` may go to ``body_id`` as it is; else why not, in one phrase."""
    labels = list(labels)
    reason = release_verdict(labels, body_id, rules.rules, rules.default)
    if reason is not None:
        return reason
    try:
        wanted = rules.copy_for(labels, body_id)
    except PolicyError as e:
        return str(e).removesuffix("; make one rule name one copy")
    if wanted is not None and wanted[1] != derivation:
        return (f"label {wanted[0]} may go to {body_id} only as {a_copy(wanted[1])} "
                "(release rule)")
    return None


# ----------------------------------------------------------------------------- signed history


def configured(vault: Vault) -> RuleSet:
    """The rules ``config.toml`` holds now."""
    return RuleSet(dict(vault.config.release_rules), vault.config.release_rules_default,
                   {k: dict(v) for k, v in vault.config.release_relations.items()})


def signed(vault: Vault, session: Session) -> RuleSet | None:
    """The rules of the newest ``rule.changed`` event, or None if there is none.

    The event must be this vault's and signed by one of its identity keys: rewriting its
    details in the database (to match a hand edit of config.toml) needs a key, not only SQL.
    """
    row = session.scalars(select(CustodyEvent).where(CustodyEvent.action == ACTION)
                          .order_by(CustodyEvent.seq.desc()).limit(1)).first()
    if row is None:
        return None
    try:
        details = checked_own_event(vault, session, row, ACTION, SUBJECT).details
        relations = {str(k): {str(b): str(r) for b, r in v.items()}
                     for k, v in details.get("relations", {}).items()}
        if any(r not in RELATIONS for v in relations.values() for r in v.values()):
            raise TypeError
        return RuleSet({str(k): tuple(str(b) for b in v) for k, v in details["rules"].items()},
                       str(details["default"]), relations)
    except VaultError as e:
        why = str(e)
    except (KeyError, TypeError, AttributeError):
        why = "its details are not a rule set"
    raise VerificationError(
        f"custody event {row.seq}: the newest rule.changed event cannot be trusted ({why}), so "
        "the release rules cannot be checked; run `evault custody verify`"
    )


def checked_own_event(vault: Vault, session: Session, row: CustodyEvent, action: str = ACTION,
                      subject: str = SUBJECT, what: str = "rule",
                      keys: Callable[[str], bytes | None] | None = None) -> Event:
    """The row's event, if its bytes are this vault's ``action`` event on ``subject`` (the
    release rules, the approval policy) and its signature by an identity key verifies.
    ``keys`` (:func:`own_keys`) saves looking the keys up again for many events."""
    event = _decode(row.body)
    if (event.log, event.seq, event.action, event.subject) != (
            origin(vault), row.seq, action, subject):
        raise VerificationError(f"it is not a {what} event of this vault's log")
    raw = (keys or own_keys(vault, session))(event.actor)
    if raw is None:
        raise VerificationError(f"its actor {event.actor} is not a key of this vault")
    _verify(raw, row.signature, row.body)
    return event


def own_keys(vault: Vault, session: Session) -> Callable[[str], bytes | None]:
    """Fingerprint -> the public signing key of one of this vault's identities, as the
    signed key history has it (the table is only its cache); a vault whose history is not
    anchored yet (made before it) has only the table."""
    history = keyhistory.load(vault, session)
    if history.anchor is not None:
        def lookup(fingerprint: str) -> bytes | None:
            entry = history.identity_keys.get(fingerprint)
            return entry.signing_key if entry is not None else None
        return lookup
    # Pairs by hand: SQLAlchemy 2.1's Result.tuples() is no longer a mapping's input.
    table = {fingerprint: key for fingerprint, key in session.execute(
        select(IdentityKey.fingerprint, IdentityKey.signing_key))}
    return table.get


@lru_cache(maxsize=65536)
def _decode(body: bytes) -> Event:
    """An event's bytes decoded, remembered: read again for each body of one export."""
    return Event.decode(body)


@lru_cache(maxsize=65536)
def _verify(key: bytes, signature: bytes, body: bytes) -> None:
    """An Ed25519 check, remembered when it passed (a failure raises and is not cached): a
    release decision reads each item's signed intake event, body by body of one export."""
    VerifyKey(key).verify(signature, body)


def difference(config: RuleSet, history: RuleSet | None) -> str | None:
    """None if ``config`` equals the signed rules; else what differs, briefly."""
    if history is None:
        if config.normal() == RuleSet({}):
            return None
        return "they were never signed; a vault from an earlier version, or edited by hand"
    a, b = config.normal(), history.normal()
    changes: list[str] = []
    for label in sorted(set(a.rules) | set(b.rules)):
        if label not in a.rules:
            changes.append(f"rule for {label} removed by hand")
        elif label not in b.rules:
            changes.append(f"rule for {label} added by hand")
        else:
            added = sorted(set(a.rules[label]) - set(b.rules[label]))
            gone = sorted(set(b.rules[label]) - set(a.rules[label]))
            changes += [f"body {x} added to rule for {label} by hand" for x in added]
            changes += [f"body {x} removed from rule for {label} by hand" for x in gone]
            was, now = b.relations.get(label, {}), a.relations.get(label, {})
            changes += [
                f"copy for {x} under rule for {label} changed from "
                f"{was.get(x, ORIGINAL)} to {now.get(x, ORIGINAL)} by hand"
                for x in sorted(set(a.rules[label]) & set(b.rules[label]))
                if was.get(x) != now.get(x)]
    if a.default != b.default:
        changes.append(f"default changed from {b.default} to {a.default} by hand")
    return "; ".join(changes) or None


def mismatch_message(what: str) -> str:
    """The one line that stops package build and export."""
    return (f"config.toml's release rules differ from the signed history ({what}); see "
            "`evault rule list`, then adopt the edit with `evault rule sign --as NAME` or "
            "restore the file")


def checked_rules(vault: Vault, session: Session) -> RuleSet:
    """The configured rules, if they are the signed ones; else a VerificationError (exit 3)."""
    config = configured(vault)
    what = difference(config, signed(vault, session))
    if what is not None:
        raise VerificationError(mismatch_message(what))
    return config


# ----------------------------------------------------------------------------- changes


def _current(vault: Vault, session: Session) -> RuleSet:
    """The signed rules as they are now, for a change: the log head is locked first (another
    rule command waits) and config.toml read again, as one that finished meanwhile rewrote it."""
    lock_head(session)
    vault.config = load_config(vault.root)
    return checked_rules(vault, session)


@dataclass(frozen=True, slots=True)
class Change(Result):
    """What a rule command did: the resulting rules, or ``changed=False``."""

    rules: RuleSet
    changed: bool

    def to_json(self) -> dict[str, Any]:
        """``changed`` first, then the rule set as signed (``default``, ``rules``)."""
        return {"changed": self.changed, **self.rules.to_dict()}


def _commit(
    vault: Vault, session: Session, new: RuleSet, change: dict[str, Any],
    as_name: str | None, now: datetime | None,
) -> Change:
    """Sign a ``rule.changed`` event with the whole new rule set, then write config.toml."""
    new = new.normal()
    pair = actor_pair(vault, session, as_name)
    record(vault, session, pair, ACTION, SUBJECT, details={**change, **new.to_dict()},
           now=now or utcnow())
    session.flush()
    config = replace(vault.config, release_rules=dict(new.rules),
                     release_rules_default=new.default,
                     release_relations={k: dict(v) for k, v in new.relations.items()})
    write_config(vault.root, config)
    vault.config = config
    return Change(new, True)


def _check_bodies(session: Session, bodies: Iterable[str]) -> None:
    for body_id in bodies:
        get_body(session, body_id)


def add_rule(
    vault: Vault, label: str, bodies: Sequence[str], *, none: bool = False,
    relation: str | None = None, as_name: str | None = None, now: datetime | None = None,
) -> Change:
    """Create the rule for ``label`` or add bodies to it; ``none``: a rule for no body.

    ``relation`` (``redacted``, ``translation``, ...) names the derived copy these bodies get
    instead of the original; ``original`` gives them the original again."""
    LABEL.check(label, "rule")  # as at intake
    if none == bool(bodies):
        raise UsageError(f"rule for {label}: give one or more BODY ids, or --none for no body")
    if none and relation is not None:
        raise UsageError(f"rule for {label}: --relation names the copy BODY ids get; a rule "
                         "for no body has none")
    if relation is not None and relation not in (ORIGINAL, *RELATIONS):
        raise UsageError(f"rule for {label}: --relation {relation!r}: use {ORIGINAL} or one "
                         f"of {', '.join(RELATIONS)}")
    with vault.transaction() as session:
        current = _current(vault, session)
        _check_bodies(session, bodies)
        old = current.rules.get(label)
        if none and old:
            raise ConflictError(
                f"rule for {label}: releases to {', '.join(old)}; remove those with "
                f"`evault rule remove {label} {' '.join(old)}`"
            )
        merged = tuple(sorted(set(old or ()) | set(bodies)))
        copies = dict(current.relations.get(label, {}))
        if relation is not None:
            for body in bodies:
                copies.pop(body, None)
                if relation != ORIGINAL:
                    copies[body] = relation
        if (old is not None and merged == tuple(sorted(old))
                and copies == current.relations.get(label, {})):
            return Change(current, False)
        relations = {**current.relations, label: copies}
        new = RuleSet({**current.rules, label: merged}, current.default, relations)
        change: dict[str, Any] = {"change": "add", "label": label, "bodies": sorted(bodies)}
        if relation is not None:
            change["relation"] = relation
        return _commit(vault, session, new, change, as_name, now)


def remove_rule(
    vault: Vault, label: str, bodies: Sequence[str] = (), *,
    as_name: str | None = None, now: datetime | None = None,
) -> Change:
    """Remove the rule for ``label``, or only some bodies from it."""
    with vault.transaction() as session:
        current = _current(vault, session)
        old = current.rules.get(label)
        if old is None:
            raise NotFoundError(f"rule for {label}: there is none; see `evault rule list`")
        missing = [b for b in bodies if b not in old]
        if missing:
            raise NotFoundError(
                f"rule for {label}: does not name body {missing[0]}; see `evault rule list`"
            )
        rules = dict(current.rules)
        if bodies:
            rules[label] = tuple(b for b in old if b not in bodies)
        else:
            del rules[label]
        return _commit(vault, session, RuleSet(rules, current.default, current.relations),
                       {"change": "remove", "label": label, "bodies": sorted(bodies)},
                       as_name, now)


def set_default(
    vault: Vault, default: str, *, as_name: str | None = None, now: datetime | None = None,
) -> Change:
    """Set what happens to a label without a rule: ``deny`` (no body) or ``allow``."""
    if default not in RULES_DEFAULT_CHOICES:
        raise UsageError(f"rule default {default!r}: use deny or allow")
    with vault.transaction() as session:
        current = _current(vault, session)
        if current.default == default:
            return Change(current, False)
        return _commit(vault, session, RuleSet(current.rules, default, current.relations),
                       {"change": "default"}, as_name, now)


def sign_rules(
    vault: Vault, *, as_name: str | None = None, now: datetime | None = None,
) -> Change:
    """Adopt config.toml's rules as they are (an upgraded vault, or a deliberate hand edit)."""
    with vault.transaction() as session:
        lock_head(session)
        vault.config = load_config(vault.root)
        config = configured(vault).normal()
        if difference(config, signed(vault, session)) is None:
            return Change(config, False)
        for label in config.rules:
            LABEL.check(label, "config.toml: release rule")
        _check_bodies(session, {b for bodies in config.rules.values() for b in bodies})
        return _commit(vault, session, config, {"change": "sign"}, as_name, now)


# ----------------------------------------------------------------------------- listing


@dataclass(frozen=True, slots=True)
class RuleRow(Result):
    """One label of ``evault rule list``: its rule, or (``rule=False``) what happens to it."""

    label: str
    bodies: tuple[str, ...]
    rule: bool
    #: A label in use without a rule: where its items go; None (and no key) for a rule.
    note: str | None = None
    #: The bodies that get only a derived copy, and which (no key if none).
    relations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields, without ``note`` for a label that has a rule, nor ``relations`` for a
        rule whose bodies all get the original."""
        out = Result.to_json(self)
        if self.note is None:
            del out["note"]
        if not self.relations:
            del out["relations"]
        return out


@dataclass(frozen=True, slots=True)
class RuleList(Result):
    """``evault rule list``: the default, one row per label, and whether config.toml is
    signed (``difference``: the line that says how it is not, else None)."""

    default: str
    rules: tuple[RuleRow, ...]
    signed: bool
    difference: str | None


def list_rules(vault: Vault) -> RuleList:
    """The rules, the default, labels in use without a rule, and any unsigned difference."""
    with vault.transaction() as session:
        config = configured(vault).normal()
        used = set(session.scalars(select(ItemLabel.label).distinct()))
        what = difference(config, signed(vault, session))
    unruled = sorted(used - set(config.rules))
    fate = ("withheld from every body" if config.default == "deny"
            else "goes to every body (default allow)")
    rows = [RuleRow(label, tuple(bodies), True, relations=config.relations.get(label, {}))
            for label, bodies in sorted(config.rules.items())]
    rows += [RuleRow(label, (), False, fate) for label in unruled]
    return RuleList(config.default, tuple(rows), what is None,
                    mismatch_message(what) if what else None)
