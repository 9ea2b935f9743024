"""`peerwatt node init`: create a node's ledger store from a genesis file.

`node run` and `node erase` write the store, and each holds its data folder while it runs: an
exclusive ``flock`` on ``node.lock`` in it (:func:`holding_data_folder`), so that a second one on
the same folder stops with one line naming the folder and what holds it. The kernel releases the
lock when its process ends, a crashed one included, so none is left stale.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import click

from chain.engine import Ledger
from chain.genesis import GenesisError
from chain.store import StoreError
from market.apps import load_app
from peerwatt.errors import UserError

NOT_RUNNING = 3  # `node status`'s exit code for a node that does not answer (docs/operations.md)
BUSY = 4  # `node status`'s exit code for a node that answers with an HTTP error (e.g. 503: busy)
LOCK_FILE = "node.lock"  # in the data folder: held by `node run` and `node erase`


@contextlib.contextmanager
def holding_data_folder(data_dir: Path, command: str) -> Iterator[None]:
    """Hold ``data_dir`` for ``command`` (e.g. "peerwatt node run") until the block ends; a
    UserError naming the folder and its holder if another process holds it. The lock file says
    who holds it and is removed on release (a crash leaves it, unlocked: harmless). A folder that
    does not exist is not made: the command says there is no store in it."""
    if not data_dir.is_dir():
        yield
        return
    path = data_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UserError(
                f"{path}: cannot open the data folder's lock file ({exc.strerror}): a process of another "
                "user that was killed may have left it; if no node runs on this folder, delete it"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{data_dir} is in use by {holder}: stop it first (one process writes a data folder)"
            ) from None
        if _same_file(path, fd):
            break
        os.close(fd)  # its last holder removed it meanwhile: lock the file at the path now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`{command}` (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: whoever opened it meanwhile tries again
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


@click.group()
def node() -> None:
    """Run and manage ledger nodes."""


@node.command("init")
@click.option("--genesis", "genesis_file", required=True, type=click.Path(path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
def init(genesis_file: Path, data_dir: Path) -> None:
    """Create the node's store in --data from --genesis; a store of the same genesis there
    already is nothing to do (exit 0), one of another genesis is refused."""
    from chain.store import db_path
    from peerwatt.config import load_genesis_setting

    # a file that is no genesis (a node.toml, say) is named for what it is (a QA pass: "unknown
    # section(s): broker, client_id, ...")
    genesis = load_genesis_setting(genesis_file, None)
    if db_path(data_dir).exists():
        _already_initialised(genesis, genesis_file, data_dir)
        return
    try:
        ledger = Ledger.create(data_dir, genesis, load_app(genesis.app_name))
    except (GenesisError, StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"created {data_dir} for community {genesis.community}")
    click.echo(f"genesis hash {genesis.hash.hex()} (every node must show the same)")
    ledger.close()


def _already_initialised(genesis, genesis_file: Path, data_dir: Path) -> None:
    """`node init` on a folder that holds a store: for the same genesis, say so (nothing to do);
    for another, a UserError naming both (found in a QA pass: a second `node init`, as SUMMARY.txt
    and the quickstart say to run it, said "already exists; use another --data folder")."""
    from chain.engine import stored_genesis
    from chain.store import Store

    try:
        store = Store.open(data_dir, readonly=True)
        try:
            held, height = stored_genesis(store), store.height()
        finally:
            store.close()
    except StoreError as exc:
        raise UserError(f"{exc} (`node init` makes a store only in a folder that holds none)") from None
    if held.hash == genesis.hash:
        click.echo(
            f"{data_dir} is already initialised for community {held.community} (genesis hash "
            f"{held.hash.hex()}, height {height}): nothing to do"
        )
        return
    raise UserError(
        f"{data_dir} holds the ledger of community {held.community} (genesis {held.hash.hex()[:16]}...), "
        f"not of {genesis_file} (community {genesis.community}, genesis {genesis.hash.hex()[:16]}...): give "
        "this node another --data folder (or move that one away to start it afresh)"
    )


def open_node_ledger(data_dir: Path) -> Ledger:
    """Open a node's store with the app its genesis names (UserError when impossible)."""
    from chain.engine import stored_genesis
    from chain.store import Store

    try:
        store = Store.open(data_dir, readonly=True)
        try:
            app_name = stored_genesis(store).app_name
        finally:
            store.close()
        return Ledger.open(data_dir, load_app(app_name))
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None


@node.command("run")
@click.option("-c", "--config", "config_file", required=True, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Log every block.")
def run(config_file: Path, verbose: bool) -> None:
    """Run a sequencer, validator or observer until Ctrl-C / SIGTERM."""
    import logging

    from peerwatt.commands.process import setup_logging
    from peerwatt.config import load_node_config

    setup_logging(verbose, {"paho": logging.WARNING})
    cfg = load_node_config(config_file)
    with holding_data_folder(cfg.data, "peerwatt node run"):
        _run(cfg, config_file)


def _run(cfg, config_file: Path) -> None:
    """`node run` with its config loaded, its data folder held."""
    from chain.consensus import Timeouts
    from peerwatt.bus import MqttBus
    from peerwatt.commands.keys import load_key
    from peerwatt.commands.process import stop_on_signals
    from peerwatt.config import load_genesis_setting
    from peerwatt.node import Node
    from peerwatt.node.http_api import NodeHttpApi
    from peerwatt.node.mempool import Mempool, MempoolError
    from peerwatt.settings import check_broker_identity, check_tls_files

    check_tls_files(cfg.broker, str(config_file))
    key = load_key(cfg.key_file, cfg.passphrase_file) if cfg.key_file else None
    note = _check_identity(cfg, key, str(config_file), check_broker_identity)
    if note:
        click.echo(note, err=True)
    expected = None if cfg.genesis_file is None else load_genesis_setting(cfg.genesis_file, str(config_file))
    ledger = open_node_ledger(cfg.data)
    if expected is not None:
        if expected.hash != ledger.genesis.hash:  # a node never serves another community's ledger
            ledger.close()
            raise UserError(
                f"{config_file}: data {cfg.data} holds the ledger of {ledger.community!r} (genesis "
                f"{ledger.genesis.hash.hex()[:16]}...), not of {cfg.genesis_file} ({expected.community!r}, "
                f"{expected.hash.hex()[:16]}...): point data at this community's store (peerwatt node init "
                f"--genesis {cfg.genesis_file} --data DIR)"
            )
    try:
        mempool = Mempool(cfg.data / "mempool.sqlite") if cfg.role != "observer" else None
    except MempoolError as exc:
        ledger.close()
        raise UserError(str(exc)) from None
    bus = MqttBus(cfg.broker, cfg.client_id)
    node_ = Node(
        ledger,
        bus,
        role=cfg.role,
        key=key,
        block_s=cfg.block_s,
        peers=cfg.peers,
        mempool=mempool,
        timeouts=Timeouts(propose_s=cfg.failover_s),
    )
    try:
        api = NodeHttpApi(cfg.data, node_.status, cfg.http_host, cfg.http_port)
    except OSError as exc:
        raise UserError(f"{exc} (is another node running? change 'http' in {config_file})") from None
    stop = stop_on_signals()
    # `kill -USR1 PID` writes every thread's stack to stderr (the node's log) and the node runs
    # on: where a node that does not answer, or does not stop, is waiting (docs/operations.md)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    api.start()
    try:
        node_.start()
    except StoreError as exc:  # its own rows, damaged (local_kv)
        api.stop()
        ledger.close()
        if mempool is not None:
            mempool.close()
        raise UserError(f"{cfg.data}: cannot start the node: {exc}") from None
    click.echo(
        f"{cfg.role} of {ledger.community} at height {ledger.height}; API {api.address}; "
        f"broker {cfg.broker.address}",
        err=True,
    )
    if not bus.wait_connected(5):
        click.echo(
            f"warning: broker {cfg.broker.address} not reachable yet ({bus.last_error}); "
            "retrying in the background",
            err=True,
        )
    try:
        node_.catch_up_at_start(stop)  # (a SIGTERM during it ends it within a fraction of a second)
        node_.run(stop)
    finally:
        node_.stop()
        api.stop()
        ledger.close()
        if mempool is not None:
            mempool.close()
    click.echo(f"stopped at height {ledger.height}", err=True)


def _check_identity(cfg, key, where: str, check) -> str | None:
    """Refuse a client certificate of another broker account than this node's (``node-<key
    id>`` of its validator key; an observer without a key: any account that is a meter's, a
    validator's or the dashboard's); the note to print when node.toml's client_id is not the
    certificate's account (the broker takes the account as client id)."""
    from chain.keys import key_id

    if key is None:
        own, signer = None, f"{where} is an observer's config without a key"
    else:
        kid = key_id(key.public_key())
        own = f"node-{kid}"
        signer = f"key = {cfg.key_file} is validator {kid}'s key (its node account: {own})"
    client_id = cfg.client_id if cfg.client_id_given else None
    return check(cfg.broker, where, own=own, signer=signer, strict=False, client_id=client_id)


@node.command("status")
@click.option("-c", "--config", "config_file", required=True, type=click.Path(path_type=Path))
def status(config_file: Path) -> None:
    """Height, last final block age, peers, broker and rejections of a running node."""
    import json
    import urllib.error
    import urllib.request

    from peerwatt.config import load_node_config

    cfg = load_node_config(config_file)
    url = f"http://{cfg.http_host}:{cfg.http_port}/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            info = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # it runs: its API answered, with an error
        what = "node busy" if exc.code == 503 else "node answers with an error"
        click.echo(f"{what} (HTTP {exc.code} at {url}: {exc.reason}); it is running, ask again later")
        click.get_current_context().exit(BUSY)
    except (urllib.error.URLError, OSError):
        from chain.store import Store

        try:
            store = Store.open(cfg.data, readonly=True)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        click.echo(f"node not running (no answer at {url}); store height {store.height()}")
        store.close()
        click.get_current_context().exit(NOT_RUNNING)  # for monitoring (docs/operations.md)
    for name in (  # every field of /v1/status, `stalled` below (a docs walk-through: store_error
        # and quarantined, which docs/operations.md sends operators to, were not printed)
        "community",
        "role",
        "key_id",
        "height",
        "head_time",
        "last_final_block_age_s",
        "broker_connected",
        "peers",
        "pending",
        "mempool",
        "accepted",
        "rejected",
        "blocks_committed",
        "blocks_refused",
        "quarantined",
        "store_error",
        "in_progress",
        "round",
        "step",
        "proposer",
        "sequencer",
        "failovers",
        "equivocations",
    ):
        click.echo(f"{name}: {info.get(name)}")
    stalled = info.get("stalled")
    if stalled and stalled.get("cause"):
        click.echo(
            f"stalled: STALLED here at height {stalled['height']} (round {stalled['round']}) for "
            f"{stalled['since_s']:.0f} s: {stalled['cause']}"
        )
    elif stalled:
        click.echo(
            f"stalled: STALLED at height {stalled['height']} (round {stalled['round']}) for "
            f"{stalled['since_s']:.0f} s, {stalled['votes']} validator(s) voting, the quorum is "
            f"{stalled['quorum']} of {stalled.get('validators', '?')}; "
            f"silent validator(s): {', '.join(stalled['missing'])}"
        )
    else:
        click.echo("stalled: no")


@node.command("erase")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--now", type=int, help="Reference time, Unix s (default: now).")
@click.option(
    "--billing",
    type=click.Path(path_type=Path),
    default=None,
    help="The operator's billing folder (default DATA/billing): the erased members' bank details "
    "are deleted there too.",
)
def erase(data_dir: Path, now: int | None, billing: Path | None) -> None:
    """Delete the payloads of members the community voted to erase, once their retention passed.

    Run it with the node stopped (it refuses a data folder `node run` holds). Hash links, roots
    and seals stay intact (`peerwatt verify` still passes and reports the erased transactions).
    Their bank details in the billing store (off the ledger) go too; a billing register that cannot
    be used ends it in one line naming the members whose bank details are not deleted (the payloads
    are erased by then): run it again once the register can be used. The market's state keeps its
    copy of their last readings until it prunes them: the output says how many and when to run
    this again (docs/privacy.md).
    """
    import time

    from peerwatt.node.erasure import erase_departed

    with holding_data_folder(data_dir, "peerwatt node erase"):
        try:
            report = erase_departed(data_dir, int(time.time()) if now is None else now)
        except (StoreError, ValueError) as exc:
            raise UserError(str(exc)) from None
        click.echo(report.summary())
        billing = billing if billing is not None else data_dir / "billing"
        if report.erased_members and (billing / "issued.sqlite").exists():
            from peerwatt.payments import erase_bank_details
            from peerwatt.statements import BillingError

            try:
                gone = erase_bank_details(billing, *report.erased_members)
            except BillingError as exc:  # the payloads are erased; it says what of the bank details is left
                raise UserError(
                    f"{exc}; the ledger payloads are erased (above): run `peerwatt node erase` again "
                    "once the register can be used"
                ) from None
            click.echo(f"deleted the bank details of {len(gone)} erased member(s) in {billing}")
