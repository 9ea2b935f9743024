"""Who may read and write what on the community's broker: one account per node and per meter.

This is the code behind the broker rows of docs/privacy.md. Each account has one role; its rights
are a list of (access, topic) pairs that ``acl_text`` writes as a Mosquitto ACL, one ``user``
block per account (no ``pattern`` lines: a pattern applies to every account, nodes included):

- ``sequencer``: reads orders, readings, gov and seals; writes blocks, headers, the book,
  receipts (trades, settlements and notices of every meter) and its own seals;
- ``validator``: reads blocks and seals; writes only its own seals (``seals/<its key id>``);
- ``observer``: reads blocks and seals; writes nothing;
- ``operator``: writes governance messages (``gov``); reads nothing;
- ``meter`` (a household's agent; user name = meter id): writes its own orders and readings,
  reads and writes its own status, reads its own receipts, the headers and the book. It never
  reads ``blocks`` (every household's readings and orders) nor another meter's topics.

A user name (or a client certificate's CN) is the account; the broker replaces the client id by
it (``use_username_as_clientid``), so one account cannot take over another's session.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from peerwatt.bus import topics

ROLES = ("sequencer", "validator", "observer", "operator", "meter")
NODE_ROLES = ("sequencer", "validator", "observer", "operator")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class AccountError(ValueError):
    """An account name or --node spec that cannot be used (one line)."""


@dataclass(frozen=True)
class Account:
    """One broker account: its user name (= client id = certificate CN), role and key id."""

    name: str
    role: str
    key_id: str | None = None  # the validator key whose seals it publishes (sequencer, validator)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AccountError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if not _NAME.fullmatch(self.name):
            raise AccountError(f"account name {self.name!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if (self.role in ("sequencer", "validator")) != (self.key_id is not None):
            raise AccountError(f"account {self.name!r}: only a sequencer or validator has a key id")
        if self.key_id is not None and not _NAME.fullmatch(self.key_id):
            raise AccountError(f"account {self.name!r}: {self.key_id!r} is not a key id")


def rights(community: str, account: Account) -> list[tuple[str, str]]:
    """The (access, topic) pairs of one account: access is read, write or readwrite."""
    t, c = topics, community
    if account.role == "sequencer":
        assert account.key_id is not None
        return [
            ("read", t.pattern(c, "orders")),
            ("read", t.pattern(c, "readings")),
            ("read", t.gov(c)),
            ("read", t.pattern(c, "seals")),
            ("write", t.seals(c, account.key_id)),
            ("write", t.blocks(c)),
            ("write", t.headers(c)),
            ("write", t.book(c)),
            ("write", t.pattern(c, "receipts")),
        ]
    if account.role == "validator":
        assert account.key_id is not None
        return [
            ("read", t.blocks(c)),
            ("read", t.pattern(c, "seals")),
            ("write", t.seals(c, account.key_id)),
        ]
    if account.role == "observer":
        return [("read", t.blocks(c)), ("read", t.pattern(c, "seals"))]
    if account.role == "operator":
        return [("write", t.gov(c))]
    meter = account.name
    return [
        ("write", t.orders(c, meter)),
        ("write", t.readings(c, meter)),
        ("readwrite", t.status(c, meter)),
        ("read", t.receipts(c, meter)),
        ("read", t.headers(c)),
        ("read", t.book(c)),
    ]


def node_account(spec: str, genesis_doc: dict[str, Any]) -> Account:
    """Parse ``NAME=ROLE[:KEYID]`` (``--node``); a sequencer's key id defaults to the genesis's."""
    name, sep, rest = spec.partition("=")
    role, _, key = rest.partition(":")
    if not sep or role not in NODE_ROLES:
        raise AccountError(
            f"--node {spec!r}: write NAME=sequencer, NAME=validator:KEYID, NAME=observer or NAME=operator"
        )
    if role == "sequencer" and not key:
        key = genesis_doc["chain"]["sequencer"]
    if role == "validator" and not key:
        raise AccountError(f"--node {spec!r}: a validator account needs its key id (NAME=validator:KEYID)")
    if role in ("observer", "operator") and key:
        raise AccountError(f"--node {spec!r}: an {role} account has no key id")
    return Account(name, role, key or None)


def community_accounts(
    genesis_doc: dict[str, Any], node_specs: Iterable[str] = (), extra_meters: Iterable[str] = ()
) -> list[Account]:
    """Every account of a community: nodes (``--node`` specs, or by default ``node-<key id>`` for
    each genesis validator, the genesis sequencer as sequencer) and one per meter."""
    specs = list(node_specs)
    if specs:
        nodes = [node_account(spec, genesis_doc) for spec in specs]
    else:
        sequencer = genesis_doc["chain"]["sequencer"]
        nodes = [
            Account(f"node-{kid}", "sequencer" if kid == sequencer else "validator", kid)
            for kid in genesis_doc["validators"]
        ]
    if sum(a.role == "sequencer" for a in nodes) > 1:
        raise AccountError("more than one sequencer account: the community has one sequencer")
    meter_ids = list(genesis_doc["meters"]) + [m for m in extra_meters if m not in genesis_doc["meters"]]
    accounts = nodes + [Account(m, "meter") for m in meter_ids]
    names = [a.name for a in accounts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AccountError(f"account name(s) used twice: {', '.join(duplicates)}")
    return accounts


def acl_text(community: str, accounts: Iterable[Account]) -> str:
    """The Mosquitto ACL: one ``user`` block per account with exactly its rights."""
    topics.pattern(community)  # checks the community id
    lines = [
        f"# peerwatt ACL for community {community!r} (generated by `peerwatt broker config`)",
        "# one block per account; what each role may read and write: docs/privacy.md",
    ]
    for account in accounts:
        key = f" (key {account.key_id})" if account.key_id else ""
        lines += ["", f"# {account.role}{key}"]
        lines.append(f"user {account.name}")
        lines += [f"topic {access} {topic}" for access, topic in rights(community, account)]
    return "\n".join(lines) + "\n"
