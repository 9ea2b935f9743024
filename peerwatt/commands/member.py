"""`peerwatt member admit|leave`: governance proposals for a household, from a validator's machine.

Sequence numbers come from the node's own store (the signer's highest accepted seq + 1, at least the
clock in milliseconds), so nobody types one. Proposals go through the broker to the community's gov
topic with the validator's operator account (``operator.toml`` next to ``node.toml``, written by
`peerwatt community init`), and the command waits, bounded, until the node's store shows them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chain.canonical import CanonicalError, loads_strict
from chain.envelope import Envelope, Rejected, sign_envelope
from chain.keys import PrivateKey, key_id
from peerwatt.errors import UserError
from peerwatt.onboarding import JoinRequest, JoinRequestError, concerns, next_seq, read_join_request

if TYPE_CHECKING:
    from chain.store import Store

VOTING_DAYS = 7


@dataclass
class NodeSide:
    """What a governance command on a validator's machine needs: store, key, broker account."""

    data: Path
    key: PrivateKey
    operator: Path | None

    @property
    def signer(self) -> str:
        return key_id(self.key.public_key())


def node_side(
    config_file: Path | None,
    data_dir: Path | None,
    key_file: Path | None,
    operator_file: Path | None,
    passphrase_file: Path | None = None,
) -> NodeSide:
    """From ``-c node.toml`` (its data, key, and operator.toml beside it), or the explicit options."""
    from peerwatt.commands.keys import load_key

    if config_file is not None:
        from peerwatt.config import load_node_config

        cfg = load_node_config(config_file)
        data_dir = data_dir or cfg.data
        if key_file is None:
            key_file, passphrase_file = cfg.key_file, passphrase_file or cfg.passphrase_file
        operator_file = operator_file or config_file.parent / "operator.toml"
    if data_dir is None or key_file is None:
        raise UserError("give the node's config (-c node.toml), or --data and --key")
    return NodeSide(data_dir, load_key(key_file, passphrase_file), operator_file)


def chain_state(data_dir: Path) -> tuple[str, dict[str, Any]]:
    """(community, the chain's governance state) after the node's last final block."""
    from chain.engine import genesis_from_dict_bytes, head_state
    from market.apps import load_app

    with _node_store(data_dir) as store:
        try:
            genesis = genesis_from_dict_bytes(store.genesis_doc())
            return genesis.community, head_state(store, load_app(genesis.app_name), genesis)["chain"]
        except ValueError as exc:
            raise UserError(str(exc)) from None


OPERATOR_KEYS = {"client_id", "broker"}  # operator.toml (written by `community init`)


def publish_gov(side: NodeSide, community: str, envelopes: list[Envelope], timeout_s: float = 20) -> None:
    """Publish envelopes on the gov topic and wait until the broker acknowledged every one."""
    from peerwatt.bus import MqttBus, Topics
    from peerwatt.config import broker_config, read_toml, take
    from peerwatt.settings import check_broker_identity, check_tls_files

    if side.operator is None:
        raise UserError("give --operator-config (operator.toml: the broker account for governance)")
    data = read_toml(side.operator)
    unknown = set(data) - OPERATOR_KEYS  # (found in a QA pass: `colour = 1` was accepted)
    if unknown:
        raise UserError(
            f"{side.operator}: unknown key(s) {', '.join(sorted(unknown))} (operator.toml holds client_id "
            "and [broker])"
        )
    # the broker must be named: without [broker] url the default plaintext 127.0.0.1:1883, which
    # nobody named, was tried for 20 s (found in a QA pass: an empty operator.toml was accepted)
    table = data.get("broker")
    if not isinstance(table, dict) or "url" not in table:
        raise UserError(
            f"{side.operator}: no [broker] url: operator.toml names the community's broker and this "
            "validator's operator account ([broker] url, ca_file, cert_file, key_file), as `peerwatt "
            "community init` writes it beside node.toml (docs/governance.md)"
        )
    broker = broker_config(data, str(side.operator), side.operator.parent)
    client_id = take(data, "client_id", str, str(side.operator), f"operator-{side.signer}")
    check_tls_files(broker, str(side.operator))
    # the broker takes the certificate's CN as account and client id: another validator's operator
    # certificate would push that operator off the broker while this command runs
    check_broker_identity(
        broker,
        str(side.operator),
        own=f"operator-{side.signer}",
        signer=f"this command signs with validator {side.signer}'s key",
        strict=False,
    )
    bus = MqttBus(broker, client_id)
    acked = threading.Semaphore(0)
    bus_log = logging.getLogger("peerwatt.bus")
    level = bus_log.level
    bus_log.setLevel(logging.ERROR)  # its "...; retrying" lines: a command does not retry, it says why
    bus.start()
    try:
        if not bus.wait_connected(timeout_s):
            why = bus.last_error or f"cannot reach the MQTT broker at {broker.address}: no answer"
            for suffix in ("; retrying", "; reconnecting"):
                why = why.removesuffix(suffix)
            raise UserError(f"{why} (waited {timeout_s:g} s; is the broker running?)")
        for env in envelopes:
            bus.publish(Topics.gov(community), env.to_bytes(), on_ack=acked.release)
        deadline = time.monotonic() + timeout_s
        for _ in envelopes:
            if not acked.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise UserError(
                    f"broker {broker.address} did not acknowledge the governance message: does the "
                    f"account in {side.operator} (an operator) exist in its ACL?"
                )
    finally:
        bus.stop()
        bus_log.setLevel(level)


def wait_until(
    data_dir: Path, done, what: str, timeout_s: float, sent: Sequence[Envelope] = ()
) -> dict[str, Any]:
    """Poll the node's store until ``done(chain)``; UserError after ``timeout_s``, or as soon as
    the ledger refused one of the ``sent`` envelopes (its reason, not a wait for nothing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, chain = chain_state(data_dir)
        if done(chain):
            return chain
        refused = ledger_refusal(data_dir, sent)
        if refused is not None:
            raise UserError(f"the ledger refused {what}: {refused}")
        if time.monotonic() > deadline:
            # exit 3, not 2: the message went out and may still be booked when the chain moves on
            raise UserError(
                f"published, but {what} is not in a final block of {data_dir} after {timeout_s:g} s; "
                "it may still be booked once blocks are final again (check `peerwatt gov list` before "
                "sending it again): are the node and the sequencer running (peerwatt node status)?",
                exit_code=3,
            )
        time.sleep(0.5)


def ledger_refusal(data_dir: Path, sent: Sequence[Envelope]) -> str | None:
    """'<reason> (block N)' if a final block of the node's store holds one of ``sent`` as
    rejected, else None."""
    if not sent:
        return None
    with _node_store(data_dir) as store:
        for env in sent:
            row = store.conn.execute("SELECT height, idx FROM txs WHERE hash = ?", (env.tx_hash,)).fetchone()
            if row is None:
                continue
            for result in store.results(row[0]):
                if result.get("kind") == "tx" and result.get("index") == row[1] and result["status"] != "ok":
                    return f"{result.get('reason', result['status'])} (block {row[0]})"
    return None


def proposal_outcome(data_dir: Path, pid: str) -> str | None:
    """'passed', 'rejected' or 'expired' with the block (and why, for a proposal that no longer
    applied when it passed), for a closed proposal of the node's store (from its governance
    results), or None while it is not closed there."""
    with _node_store(data_dir) as store:
        for height, _idx, data in store.results_of_kinds(["gov"]):
            result = loads_strict(data)
            if result.get("proposal") == pid and result.get("outcome") in ("passed", "rejected", "expired"):
                why = f": {result['reason']}" if isinstance(result.get("reason"), str) else ""
                return f"{result['outcome']} in block {height}{why}"
    return None


@contextmanager
def _node_store(data_dir: Path) -> Iterator[Store]:
    """The node's store, read-only, closed after; a StoreError is a UserError (one line)."""
    from chain.store import Store, StoreError

    try:
        store = Store.open(data_dir, readonly=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        yield store
    except StoreError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def sign_gov(
    side: NodeSide, community: str, chain: dict[str, Any], kind: str, body: dict[str, Any], seq: int, now: int
) -> Envelope:
    try:
        return sign_envelope(
            side.key,
            type=kind,
            community=community,
            seq=seq,
            body=body,
            created=now,
            ttl_s=VOTING_DAYS * 86400,
        )
    except (Rejected, CanonicalError) as exc:
        raise UserError(f"cannot sign the {kind}: {exc}") from None


def propose_all(
    side: NodeSide,
    actions: list[tuple[str, dict[str, Any]]],
    wait_s: float,
    *,
    days: int = VOTING_DAYS,
    note: str | None = None,
) -> list[Envelope]:
    """Sign proposals, check each as the ledger will (one line naming why it would be refused),
    and publish them; returns the signed proposals (their ids are their transaction hashes)."""
    from chain.governance import check_proposal
    from market.apps import load_app

    community, chain = chain_state(side.data)
    check_params = load_app(chain_app_name(side.data)).check_params
    now = int(time.time())
    seq = next_seq(chain, side.signer)
    envelopes = []
    for i, (action, args) in enumerate(actions):
        body = {"action": action, "args": args, "deadline": now + days * 86400}
        if note:
            body["note"] = note
        env = sign_gov(side, community, chain, "propose", body, seq + i, now)
        try:
            check_proposal(chain, env, now, check_params)
        except Rejected as exc:
            raise UserError(f"the ledger would refuse this {action} proposal: {exc}") from None
        envelopes.append(env)
    publish_gov(side, community, envelopes)
    return envelopes


def chain_app_name(data_dir: Path) -> str:
    """The app the node's ledger runs (from its genesis)."""
    from chain.engine import stored_genesis

    with _node_store(data_dir) as store:
        return stored_genesis(store).app_name


def _request(path: Path, community: str) -> JoinRequest:
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the join request file in it (join-request.txt)")
    try:
        request = read_join_request(path)
    except JoinRequestError as exc:  # (named once: some of its messages name the file already)
        raise UserError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if request.community != community:
        raise UserError(f"{path} asks to join {request.community!r}; this node is in {community!r}")
    return request


def _proposal_state(chain: dict[str, Any], action: str, member: str, meter: str) -> str | None:
    for pid, proposal in chain["proposals"].items():
        if proposal["action"] == action and concerns(proposal, {member}, {meter}, set()):
            return pid
    return None


def node_publish_options(what: str):
    """The options of a command that signs on a validator's machine and publishes: its node
    (-c node.toml or --data), the broker account (--operator-config) and how long to wait for
    ``what`` to be in a final block (--wait)."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="This validator's node.toml (its store, key, and operator.toml beside it).",
        ),
        click.option("--data", "data_dir", type=click.Path(path_type=Path), help="The node's data folder."),
        click.option(
            "--operator-config",
            "operator_file",
            type=click.Path(path_type=Path),
            help="The broker account for governance (default: operator.toml beside node.toml).",
        ),
        click.option(
            "--wait",
            "wait_s",
            type=click.FloatRange(0, 600),
            default=60,
            show_default=True,
            help=f"Seconds to wait for {what} to be in a final block.",
        ),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def node_options(func):
    """member admit/leave: a node's options and the signing key."""
    func = node_publish_options("the proposal")(func)
    return click.option("--key", "key_file", type=click.Path(path_type=Path), help="The signing key.")(func)


@click.group()
def member() -> None:
    """Admit a household (its member and meter) or let one leave, by community vote."""


@member.command("admit")
@click.argument("request_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@node_options
def admit(request_files, config_file, data_dir, key_file, operator_file, wait_s) -> None:
    """Propose the next step for each join REQUEST: add_member, then (once the members voted it in)
    enroll_meter. Run it again after the votes; it says what is open and what is done."""
    side = node_side(config_file, data_dir, key_file, operator_file)
    community, chain = chain_state(side.data)
    actions, notes = [], []
    for path in request_files:
        r = _request(path, community)
        member_id, meter_id = r.member_id, r.meter_id
        if meter_id in chain["revoked"]:
            # a household that left (or whose meter was revoked) does not come back on its old keys
            gone = "" if member_id in chain["members"] else f" and member {member_id} was removed"
            raise UserError(
                f"{path}: meter {meter_id} was revoked in block {chain['revoked'][meter_id]}{gone}: "
                "a revoked meter key never trades again; to rejoin, the household makes new keys and "
                "a new join request (`peerwatt agent setup`)"
            )
        if meter_id in chain["meters"]:
            notes.append(f"{r.name}: meter {meter_id} is already enrolled; nothing to do")
        elif member_id not in chain["members"]:
            pid = _proposal_state(chain, "add_member", member_id, meter_id)
            if pid:
                notes.append(
                    f"{r.name}: add_member {pid} is open: members vote with "
                    f"`peerwatt gov vote -c node.toml --request {path} --yes`"
                )
            else:
                actions.append((r, "add_member", {"key": r.member, "name": r.name}))
        else:
            pid = _proposal_state(chain, "enroll_meter", member_id, meter_id)
            if pid:
                notes.append(
                    f"{r.name}: enroll_meter {pid} is open: validators vote with "
                    f"`peerwatt gov vote -c node.toml --request {path} --yes`"
                )
            else:
                active = (m for m, info in chain["meters"].items() if info["active"])
                twin = next((m for m in active if chain["meters"][m]["serial"] == r.serial), None)
                if twin is not None:  # one physical meter, two keys trading its energy
                    raise UserError(
                        f"{path}: serial {r.serial} is already enrolled for meter {twin} (owner "
                        f"{chain['meters'][twin]['owner']}): check the serial printed on the meter, or "
                        "revoke the old key first (peerwatt member leave)"
                    )
                args = {"key": r.meter, "serial": r.serial, "owner": member_id, "capacity_w": r.capacity_w}
                actions.append((r, "enroll_meter", args))
    for note in notes:
        click.echo(note)
    if not actions:
        return
    sent = propose_all(side, [(a, args) for _, a, args in actions], wait_s)
    ids = [env.tx_hash.hex() for env in sent]

    def seen(chain: dict[str, Any]) -> bool:
        return all(
            pid in chain["proposals"] or _passed(chain, a, args)
            for pid, (_, a, args) in zip(ids, actions, strict=True)
        )

    chain = wait_until(side.data, seen, "the proposal", wait_s, sent) if wait_s else chain
    for pid, (r, action, args) in zip(ids, actions, strict=True):
        click.echo(f"{r.name}: {action} proposed ({pid}): {_tally(chain, pid, action, args, wait_s)}")


def _passed(chain: dict[str, Any], action: str, args: dict[str, Any]) -> bool:
    from chain.keys import load_public_key

    if action in ("add_member", "enroll_meter"):
        kid = key_id(load_public_key(args["key"]))
        return kid in (chain["members"] if action == "add_member" else chain["meters"])
    if action == "remove_member":
        return args["member"] not in chain["members"]
    if action == "revoke_meter":
        return args["meter"] in chain["revoked"]
    return False


def _tally(chain: dict[str, Any], pid: str, action: str, args: dict[str, Any], wait_s: float = 1) -> str:
    """The proposal's state in ``chain``; with ``--wait 0`` (not waited for), only "published"."""
    from chain.governance import electorate

    if not wait_s:
        return "published, not waited for (--wait 0): see `peerwatt gov list`"

    if pid in chain["proposals"]:
        p = chain["proposals"][pid]
        _, needed = electorate(chain, action, p)
        return f"open, {len(p['yes'])} of {needed} yes votes"
    return "passed" if _passed(chain, action, args) else "closed (rejected or expired)"


@member.command("leave")
@click.argument("who", required=True)
@node_options
def leave(who, config_file, data_dir, key_file, operator_file, wait_s) -> None:
    """Propose that a household leaves: revoke its meters (validators vote) and remove the member
    (members vote). WHO is the member's key id or its join request file. Only what is neither done
    nor open yet is proposed (a meter left active after the member was removed, say); when nothing
    is left to propose, it says so (exit 0: nothing to do)."""
    side = node_side(config_file, data_dir, key_file, operator_file)
    community, chain = chain_state(side.data)
    member_id = _leaving_member(who, community)
    owned = sorted(m for m, info in chain["meters"].items() if info["owner"] == member_id)
    is_member = member_id in chain["members"]
    if not is_member and not owned:
        raise UserError(
            f"{member_id} is not a member of {community} and owns no meter there: give a member's "
            "key id or its join request file"
        )
    open_ids = {
        pid: p
        for pid, p in sorted(chain["proposals"].items())
        if p["action"] in ("revoke_meter", "remove_member") and concerns(p, {member_id}, set(owned), set())
    }
    proposed = {(p["action"], p["args"].get("meter") or p["args"].get("member")) for p in open_ids.values()}
    actions = [
        ("revoke_meter", {"meter": m})
        for m in owned
        if chain["meters"][m].get("active") and ("revoke_meter", m) not in proposed
    ]
    if is_member and ("remove_member", member_id) not in proposed:
        actions.append(("remove_member", {"member": member_id}))
    vote = f"`peerwatt gov vote -c node.toml --member {member_id} --yes`"
    if not actions and open_ids:  # nothing to do, as member admit of an enrolled meter: exit 0
        click.echo(
            f"the leave of {member_id} is already proposed ({len(open_ids)} open proposal(s): "
            f"{', '.join(p['action'] for p in open_ids.values())}); nothing to do: the others vote "
            f"with {vote}"
        )
        return
    if not actions:
        revoked = ", ".join(f"{m} at height {chain['revoked'][m]}" for m in owned if m in chain["revoked"])
        click.echo(
            f"{member_id} has already left {community}: not a member any more, its meters revoked "
            f"({revoked or 'none'}); nothing to do"
        )
        return
    for pid, p in open_ids.items():
        click.echo(
            f"{p['action']} {p['args']} is open already ({pid}): {_tally(chain, pid, p['action'], p['args'])}"
        )
    sent = propose_all(side, actions, wait_s)
    ids = [env.tx_hash.hex() for env in sent]

    def seen(chain: dict[str, Any]) -> bool:
        return all(
            pid in chain["proposals"] or _passed(chain, a, args)
            for pid, (a, args) in zip(ids, actions, strict=True)
        )

    chain = wait_until(side.data, seen, "the proposal", wait_s, sent) if wait_s else chain
    for pid, (action, args) in zip(ids, actions, strict=True):
        click.echo(f"{action} {args} proposed ({pid}): {_tally(chain, pid, action, args, wait_s)}")
    click.echo(
        f"the others vote with {vote}; erasure of its readings after the retention period is a "
        "separate vote (erase_member)"
    )


def _leaving_member(who: str, community: str) -> str:
    """The member key id that WHO names: a join request file, or the key id itself."""
    path = Path(who)
    if path.is_file() or path.is_dir():
        return _request(path, community).member_id
    if re.fullmatch(r"[0-9a-fA-F]{32}", who):
        return who.lower()
    raise UserError(f"{who}: no such join request file, nor a member key id (32 hex digits)")
