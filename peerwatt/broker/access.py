"""Who may read and write what on the community's broker: one account per node and per meter.

This is the code behind the broker rows of docs/privacy.md. Each account has one role; its rights
are a list of (access, topic) pairs that ``acl_text`` writes as a Mosquitto ACL, one ``user``
block per account (no ``pattern`` lines: a pattern applies to every account, nodes included):

- ``validator`` (and ``sequencer``, the same rights: any validator proposes when its turn comes,
  docs/ledger.md "Consensus"): reads orders, readings, gov, blocks and seals; writes blocks
  (its proposals), its own votes (``seals/<its key id>``), its own configuration history
  (``config/<its key id>``), headers, the book and receipts (trades, settlements and notices of
  every meter);
- ``observer``: reads blocks and seals; writes nothing;
- ``operator``: writes governance messages (``gov``); reads nothing;
- ``dashboard`` (``--dashboard``, user name ``dashboard``; or ``--node NAME=dashboard``): reads
  every agent's retained status (``status/+``, the household page's agent panel); writes nothing;
- ``meter`` (a household's agent; user name = meter id): writes its own orders and readings,
  reads and writes its own status, reads its own receipts, the headers, every validator's
  configuration history (``config/+``) and the book. It never
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

ROLES = ("sequencer", "validator", "observer", "operator", "dashboard", "meter")
NODE_ROLES = ("sequencer", "validator", "observer", "operator", "dashboard")
DASHBOARD_ACCOUNT = "dashboard"  # the name `--dashboard` gives (dashboard.toml's broker_client_id default)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")  # chain.keys.key_id: a meter's id (its account name and CN)


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
    if account.role in ("sequencer", "validator"):
        assert account.key_id is not None
        return [
            ("read", t.pattern(c, "orders")),
            ("read", t.pattern(c, "readings")),
            ("read", t.gov(c)),
            ("readwrite", t.blocks(c)),
            ("read", t.pattern(c, "seals")),
            ("write", t.seals(c, account.key_id)),
            ("write", t.config(c, account.key_id)),
            ("write", t.headers(c)),
            ("write", t.book(c)),
            ("write", t.pattern(c, "receipts")),
        ]
    if account.role == "observer":
        return [("read", t.blocks(c)), ("read", t.pattern(c, "seals"))]
    if account.role == "operator":
        return [("write", t.gov(c))]
    if account.role == "dashboard":
        return [("read", t.pattern(c, "status"))]
    meter = account.name
    return [
        ("write", t.orders(c, meter)),
        ("write", t.readings(c, meter)),
        ("readwrite", t.status(c, meter)),
        ("read", t.receipts(c, meter)),
        ("read", t.headers(c)),
        ("read", t.pattern(c, "config")),
        ("read", t.book(c)),
    ]


def node_account(spec: str, sequencer: str) -> Account:
    """Parse ``NAME=ROLE[:KEYID]`` (``--node``); a sequencer's key id defaults to ``sequencer``
    (the community's sequencer key id)."""
    name, sep, rest = spec.partition("=")
    role, _, key = rest.partition(":")
    if not sep or role not in NODE_ROLES:
        raise AccountError(
            f"--node {spec!r}: write NAME=sequencer, NAME=validator:KEYID, NAME=observer, NAME=operator "
            "or NAME=dashboard"
        )
    if role == "sequencer" and not key:
        key = sequencer
    if role == "validator" and not key:
        raise AccountError(f"--node {spec!r}: a validator account needs its key id (NAME=validator:KEYID)")
    if role in ("observer", "operator", "dashboard") and key:
        raise AccountError(f"--node {spec!r}: an {role} account has no key id")
    return Account(name, role, key or None)


@dataclass(frozen=True)
class Registry:
    """Who the community's accounts are for: the sequencer and validator key ids in force, the
    meters that may use the broker, and the meters left out with the reason (revoked, departed)."""

    sequencer: str
    validators: tuple[str, ...]
    meters: tuple[str, ...]
    left_out: dict[str, str]


def genesis_registry(genesis_doc: dict[str, Any]) -> Registry:
    """The registry at genesis: every genesis validator and meter."""
    return Registry(
        genesis_doc["chain"]["sequencer"], tuple(genesis_doc["validators"]), tuple(genesis_doc["meters"]), {}
    )


def chain_registry(chain: dict[str, Any]) -> Registry:
    """The registry of a node's current chain state (``state["chain"]``): the validator set and
    sequencer in force, and the meters that are active and whose owner is still a member. A meter
    revoked by vote, or whose owner left the community (removed or erased), is left out."""
    meters, left_out = [], {}
    for kid, meter in chain["meters"].items():
        owner = meter.get("owner")
        if not meter.get("active", True):
            left_out[kid] = f"revoked at height {chain['revoked'].get(kid, '?')}"
        elif owner not in chain["members"] or owner in chain.get("erased", {}):
            left_out[kid] = "its owner left the community"
        else:
            meters.append(kid)
    return Registry(chain["sequencer"], tuple(chain["validators"]), tuple(meters), left_out)


def community_accounts(
    genesis_doc: dict[str, Any] | None = None,
    node_specs: Iterable[str] = (),
    extra_meters: Iterable[str] = (),
    *,
    registry: Registry | None = None,
    exclude: Iterable[str] = (),
    dashboard: str | None = None,
) -> list[Account]:
    """Every account of a community: nodes (``--node`` specs, or by default ``node-<key id>`` for
    each validator, the sequencer as sequencer) and one per meter, from the genesis or from a
    ``registry`` (the current chain state: ``chain_registry``). ``exclude`` drops accounts by name
    or by key id (a meter id, a validator's key id); a name matching nothing is an error, unless it
    is a meter the registry already leaves out. ``dashboard``: the name of a read-only dashboard
    account to add (``status/+`` only; None: none)."""
    if registry is None:
        if genesis_doc is None:
            raise TypeError("give a genesis document or a registry")
        registry = genesis_registry(genesis_doc)
    specs = list(node_specs)
    if specs:
        nodes = [node_account(spec, registry.sequencer) for spec in specs]
    else:
        nodes = [
            Account(f"node-{kid}", "sequencer" if kid == registry.sequencer else "validator", kid)
            for kid in registry.validators
        ]
    if sum(a.role == "sequencer" for a in nodes) > 1:
        raise AccountError("more than one sequencer account: the community has one sequencer")
    for meter in extra_meters:
        if not _KEY_ID.fullmatch(meter):
            raise AccountError(f"--meter {meter}: not a meter id (the meter key's id: 32 hex digits 0-9a-f)")
        if meter in registry.left_out:
            raise AccountError(f"--meter {meter}: {registry.left_out[meter]}; it gets no broker account")
    meter_ids = list(registry.meters) + [m for m in extra_meters if m not in registry.meters]
    accounts = nodes + [Account(m, "meter") for m in meter_ids]
    if dashboard is not None:
        accounts.append(Account(dashboard, "dashboard"))
    names = [a.name for a in accounts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AccountError(f"account name(s) used twice: {', '.join(duplicates)}")
    for name in exclude:
        matches = [a for a in accounts if name in (a.name, a.key_id)]
        if not matches and name not in registry.left_out:
            raise AccountError(f"--exclude {name}: no such account (give an account name or a key id)")
        accounts = [a for a in accounts if a not in matches]
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
