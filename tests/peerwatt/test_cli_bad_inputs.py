"""Bad inputs a user can give the CLI (found in a QA pass): each gives one line and a non-zero
exit, never a traceback, and never a half-written or overwritten output file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from peerwatt.errors import UserError, write_outputs
from tests.peerwatt.test_cli_bad_files import one_line_error
from tests.support.cli import peerwatt
from tests.support.market_ledger import closed_market_data


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """A node's data folder holding a full trade round (one validator), left closed."""
    return closed_market_data(tmp_path_factory.mktemp("market"))


@pytest.fixture()
def key(tmp_path) -> Path:
    r = peerwatt("keys", "new", "--out", str(tmp_path), "--name", "V")
    assert r.returncode == 0, r.stderr
    return tmp_path / "V.key"


def propose(key: Path, out: Path, *args: str):
    return peerwatt(
        "gov", "propose", "--key", str(key), "--community", "oak", "--action", "set_param",
        "--arg", "name=x", *args, "--out", str(out),
    )  # fmt: skip


def test_gov_propose_refuses_an_integer_the_ledger_cannot_hold(tmp_path, key):
    r = propose(key, tmp_path / "p.json", "--arg", "value=99999999999999999999999")
    one_line_error(r, "--arg value=99999999999999999999999", "2^53")
    assert not (tmp_path / "p.json").exists()


def test_gov_out_a_folder_a_path_under_a_file_or_an_existing_file(tmp_path, key):
    folder = tmp_path / "adir"
    folder.mkdir()
    (tmp_path / "f").write_text("")
    existing = tmp_path / "existing.json"
    existing.write_text("keep me")
    for out, words in (
        (folder, ("adir", "folder")),
        (tmp_path / "f" / "p.json", ("f/p.json", "not a folder")),
        (existing, ("existing.json", "already exists")),
    ):
        r = propose(key, out, "--arg", "value=9")
        one_line_error(r, *words)
        assert "proposal id" not in r.stderr  # nothing was signed away
        r = peerwatt(
            "gov", "vote", "--key", str(key), "--community", "oak", "--proposal", "ab" * 32, "--yes",
            "--out", str(out),
        )  # fmt: skip
        one_line_error(r, *words)
    assert existing.read_text() == "keep me" and os.listdir(folder) == []
    r = propose(key, tmp_path / "new.json", "--arg", "value=9")
    assert r.returncode == 0 and "proposal id" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["V.key", "V.pub", "adir", "existing.json", "f", "new.json"]


def test_a_folder_as_a_signing_key_is_one_line(tmp_path, key):
    folder = tmp_path / "adir"
    folder.mkdir()
    r = propose(folder, tmp_path / "p.json", "--arg", "value=9")
    one_line_error(r, "adir", "is a folder")
    r = propose(key.with_suffix(".pub"), tmp_path / "p.json", "--arg", "value=9")
    one_line_error(r, "V.pub", "public key")
    assert not (tmp_path / "p.json").exists()


def test_write_outputs_is_all_or_nothing(tmp_path):
    """A failure writing any one file leaves none of them written nor any temporary file."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("old")

    def full(path: Path) -> None:
        path.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with pytest.raises(UserError, match=r"cannot write .*b\.csv: No space left on device"):
        write_outputs({first: lambda p: p.write_text("new"), second: full}, overwrite=True)
    assert os.listdir(tmp_path) == ["a.csv"] and first.read_text() == "old"
    with pytest.raises(UserError, match="already exists"):
        write_outputs(
            {second: lambda p: p.write_text("new"), first: lambda p: p.write_text("x")}, overwrite=False
        )
    assert os.listdir(tmp_path) == ["a.csv"] and first.read_text() == "old"
    write_outputs({first: lambda p: p.write_text("new"), second: lambda p: p.write_text("b")}, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"] and first.read_text() == "new"


def test_report_writes_all_its_files_or_none(tmp_path, market):
    """Found in a QA pass: with part-trades.csv a folder, `report --out part.csv` wrote part.csv
    before it stopped at part-trades.csv."""
    (tmp_path / "part-trades.csv").mkdir()
    (tmp_path / "part-kpis.csv").write_text("old")
    r = peerwatt("report", "--data", str(market), "--out", str(tmp_path / "part.csv"))
    assert sorted(os.listdir(tmp_path)) == ["part-kpis.csv", "part-trades.csv"]
    one_line_error(r, "part-trades.csv", "folder")
    assert (tmp_path / "part-kpis.csv").read_text() == "old"
    (tmp_path / "part-trades.csv").rmdir()
    r = peerwatt("report", "--data", str(market), "--out", str(tmp_path / "part.csv"))
    assert r.returncode == 0, r.stderr
    names = ("", "-kpis", "-settlements", "-trades")
    assert sorted(os.listdir(tmp_path)) == sorted(f"part{s}.csv" for s in names)
    assert (tmp_path / "part-kpis.csv").read_text() != "old"


@pytest.fixture(scope="module")
def june(tmp_path_factory):
    """A June on a market ledger (tests/peerwatt/test_statements_month.py) with 5 statements."""
    from tests.peerwatt.test_statements_month import build_month

    return build_month(tmp_path_factory.mktemp("june"))


def issue_june(june, billing: Path, out: Path, *more: str):
    return peerwatt(
        "statements", "--data", str(june.node), "--period", "2026-06", "--height", str(june.issue_height),
        "--issued-on", "2026-07-01", "--billing", str(billing), "--out", str(out), *more,
    )  # fmt: skip


def test_statements_a_register_or_folder_that_cannot_be_used_is_one_line(tmp_path, june):
    """Found in a QA pass: a read-only billing folder raised sqlite3.OperationalError (here, as
    root, a folder where issued.sqlite should be, and a billing folder under a file)."""
    (tmp_path / "b" / "issued.sqlite").mkdir(parents=True)
    one_line_error(
        issue_june(june, tmp_path / "b", tmp_path / "out"), "b/issued.sqlite", "cannot use the register"
    )
    (tmp_path / "afile").write_text("")
    r = issue_june(june, tmp_path / "afile" / "b", tmp_path / "out")
    one_line_error(r, "afile is a file")
    r = issue_june(june, tmp_path / "b2", tmp_path / "afile" / "out")
    one_line_error(r, "cannot write the statements", "afile is a file")
    assert sorted(os.listdir(tmp_path)) == ["afile", "b"]  # no out, no b2


def test_statements_for_a_month_before_the_ledger_began_is_one_line(tmp_path, june):
    """Left from a QA pass: --period of a month that ended before the genesis said 'no statements
    to issue for 2025-05' with exit 0, as if nobody had used energy; `report` refuses such a period."""
    r = peerwatt(
        "statements", "--data", str(june.node), "--period", "2025-05", "--billing", str(tmp_path / "b"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    one_line_error(r, "2025-05 ended before this ledger began", "nothing in it to bill")
    assert os.listdir(tmp_path) == []


def test_statements_that_issue_nothing_make_nothing(tmp_path, june):
    """Found in a QA pass: a period with nothing to issue still made --out and issued.sqlite."""
    for extra in ((), ("--corrections",)):
        r = peerwatt(
            "statements", "--data", str(june.node), "--period", "2025-05", "--billing", str(tmp_path / "b"),
            "--out", str(tmp_path / "out"), *extra,
        )  # fmt: skip
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


def test_statements_a_file_that_cannot_be_written_writes_none(tmp_path, june):
    """One statement file that cannot be written (a folder in its place): no file of the run is
    written, nothing is issued, and the run goes through once it can."""
    (tmp_path / "out" / "oak-street-2026-06-0004.pdf").mkdir(parents=True)
    r = issue_june(june, tmp_path / "b", tmp_path / "out")
    one_line_error(r, "oak-street-2026-06-0004.pdf")
    assert os.listdir(tmp_path / "out") == ["oak-street-2026-06-0004.pdf"]
    (tmp_path / "out" / "oak-street-2026-06-0004.pdf").rmdir()
    r = issue_june(june, tmp_path / "b", tmp_path / "out")
    assert r.returncode == 0 and "issued 5 statements" in r.stdout, r.stderr
    assert len(os.listdir(tmp_path / "out")) == 16


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"kind":"statement"}', "ledger.height is missing"),
        (b'{"kind":"credit_note","corrected":5}', "corrected figures are not an object"),
        (b"[1,2]", "JSON list"),
        (b'{"type":"propose","body":{}}', "its kind is None"),
        (b"%PDF-1.4 junk", "not a readable PDF"),
    ],
)
def test_statements_verify_what_is_not_a_statement(tmp_path, june, content, words):
    """Found in a QA pass: KeyError/TypeError/AttributeError tracebacks; other JSON was 'unknown
    document kind None ... 1 figure(s) differ' with rc 1; a junk PDF printed pypdf's own line."""
    doc = tmp_path / ("s.pdf" if content.startswith(b"%PDF") else "s.json")
    doc.write_bytes(content)
    r = peerwatt("statements", "verify", "--data", str(june.node), str(doc))
    one_line_error(r, str(doc), words)
    assert r.returncode == 2 and r.stdout == ""


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Path:
    """A one-validator community's validator folder with its store made, its operator account
    pointed at a loopback port where nothing listens."""
    import socket

    from tests.peerwatt.test_cli_bad_files import COMMUNITY

    out = tmp_path_factory.mktemp("community") / "c"
    r = peerwatt(*COMMUNITY, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    folder = out / "validator-1"
    r = peerwatt(
        "node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "node-data")
    )
    assert r.returncode == 0, r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    operator = folder / "operator.toml"
    operator.write_text(operator.read_text().replace("127.0.0.1:8883", f"127.0.0.1:{port}"))
    return folder


def test_member_leave_and_admit_name_a_bad_request_file_once(tmp_path, validator):
    """Found in a QA pass: 'error: junk: junk is not a text file'; a folder was 'no such join
    request file'."""
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(128, 256)))
    folder = tmp_path / "adir"
    folder.mkdir()
    config = str(validator / "node.toml")
    r = peerwatt("member", "leave", "-c", config, str(junk))
    one_line_error(r, "not a text file")
    assert r.stderr.count(str(junk)) == 1, r.stderr
    for command in ("leave", "admit"):
        one_line_error(peerwatt("member", command, "-c", config, str(folder)), str(folder), "is a folder")


def test_a_broker_that_is_down_is_one_line_without_retrying(validator):
    """Found in a QA pass: the bus's 'cannot reach ...; retrying' line, then 'error: broker ...
    not reachable: cannot reach ...; retrying', though nothing retries."""
    r = peerwatt(
        "gov", "propose", "-c", str(validator / "node.toml"), "--action", "set_param",
        "--arg", "name=max_orders_per_interval", "--arg", "value=3", "--wait", "1",
    )  # fmt: skip
    one_line_error(r, "cannot reach the MQTT broker", "is the broker running?")
    assert "retrying" not in r.stderr


def test_gov_propose_with_a_node_and_out_names_what_out_takes(tmp_path, validator):
    """Found in a QA pass: `gov propose -c node.toml ... --out p.json` said 'without a node
    (-c node.toml or --data) give --key and --community', though a node was given."""
    r = peerwatt(
        "gov", "propose", "-c", str(validator / "node.toml"), "--action", "set_param",
        "--arg", "name=max_orders_per_interval", "--arg", "value=3", "--out", str(tmp_path / "p.json"),
    )  # fmt: skip
    one_line_error(r, "--out signs the proposal here without publishing it", "drop --out")
    assert "without a node" not in r.stderr and not (tmp_path / "p.json").exists()


def test_broker_config_refuses_values_that_are_not_one_word(tmp_path, validator):
    """Found in a QA pass: --bind $'1.2.3.4\\ninclude_dir /tmp/evil' exited 0 and wrote an
    include_dir line into mosquitto.conf; --bind 'x y' wrote 'listener 8883 x y'; a new line in
    --user broke the systemd drop-in; --out a file was '[Errno 20] Not a directory'."""
    genesis = str(validator.parent / "genesis.toml")
    (tmp_path / "junk").write_text("")
    for args, words in (
        (["--bind", "1.2.3.4\ninclude_dir /tmp/evil"], "--bind"),
        (["--bind", "x y"], "--bind"),
        (["--user", "mosq\nx"], "--user"),
        (["--persistence", str(tmp_path / "p\nx")], "--persistence"),
        (["--out", str(tmp_path / "junk")], "junk is a file"),
    ):
        out = [] if "--out" in args else ["--out", str(tmp_path / "b")]
        r = peerwatt("broker", "config", "--genesis", genesis, *out, *args)
        one_line_error(r, *words.split())
    assert sorted(os.listdir(tmp_path)) == ["junk"]
    for bind in ("192.0.2.7", "::1", "broker.example.org"):
        r = peerwatt("broker", "config", "--genesis", genesis, "--out", str(tmp_path / "b"), "--bind", bind)
        assert r.returncode == 0, r.stderr
        assert f"listener 8883 {bind}\n" in (tmp_path / "b" / "mosquitto.conf").read_text()


def test_broker_config_prints_and_writes_quoted_paths(tmp_path, validator):
    """Found in a QA pass: `mosquitto -c /tmp/qa-cli/bconf x/mosquitto.conf` was printed as is."""
    import shlex

    out = tmp_path / "bconf x"
    r = peerwatt(
        "broker", "config", "--genesis", str(validator.parent / "genesis.toml"), "--out", str(out),
        "--persistence", str(tmp_path / "p q"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    start = next(x for x in r.stdout.splitlines() if x.startswith("start as root: "))
    install, run = start.removeprefix("start as root: ").split(" && ")
    assert shlex.split(run) == ["/usr/sbin/mosquitto", "-c", f"{out}/mosquitto.conf"]
    assert shlex.split(install)[-1] == str(tmp_path / "p q")
    dropin = (out / "mosquitto.service.d" / "peerwatt.conf").read_text()
    assert f"ExecStart=/usr/sbin/mosquitto -c '{out}/mosquitto.conf'\n" in dropin


def test_broker_certs_reissue_of_no_such_account_is_an_error(tmp_path, validator):
    """Found in a QA pass: --reissue nosuchaccount did nothing with rc 0 (--revoke errs)."""
    genesis = str(validator.parent / "genesis.toml")
    r = peerwatt(
        "broker", "certs", "--out", str(tmp_path / "certs"), "--genesis", genesis, "--reissue", "nosuch"
    )
    one_line_error(r, "--reissue nosuch", "no such account")
    assert not (tmp_path / "certs").exists()


def test_a_device_or_a_fifo_as_a_key_is_one_line_and_never_read(tmp_path):
    """Found in a QA pass of 2d3d090: the key file was read whole before anything else, so
    `--key /dev/zero` ran out of memory (MemoryError after 1.3 GB) and a FIFO hung."""
    fifo = tmp_path / "k.fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        r = peerwatt(
            "gov", "propose", "--key", path, "--community", "oak", "--action", "set_param",
            "--arg", "name=x", "--arg", "value=1", "--out", str(tmp_path / "p.json"),
        )  # fmt: skip
        one_line_error(r, path, "not a regular file")
    big = tmp_path / "big.key"
    big.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 100_000)
    big.chmod(0o600)
    one_line_error(propose(big, tmp_path / "p.json", "--arg", "value=1"), "too large to be a private key")


def test_output_names_as_long_as_a_name_can_be(tmp_path, key, market):
    """Found in a QA pass: the temporary name (.NAME.PID.tmp) made a 247-byte target name too
    long, and a name over 255 bytes was a traceback."""
    stem = "r" * 236  # + "-settlements.csv": 252 bytes, still a name
    r = peerwatt("report", "--data", str(market), "--out", str(tmp_path / f"{stem}.csv"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"{stem}-settlements.csv").exists()
    one_line_error(
        propose(key, tmp_path / ("v" * 300 + ".json"), "--arg", "value=1"), "longer than 255 bytes"
    )


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """Found in a QA pass: `timeout -s TERM` during `report --out` left .part*.tmp files behind
    (the cleanup ran on Ctrl-C only). SIGTERM is now raised like Ctrl-C in every command that has
    no handler of its own."""
    import subprocess
    import sys

    script = f"""
import os, signal, sys
from pathlib import Path
from peerwatt import cli
from peerwatt.errors import write_outputs
signal.signal(signal.SIGTERM, cli._terminated)
def first(path):
    path.write_text("a")
def killed(path):
    path.write_text("b")
    os.kill(os.getpid(), signal.SIGTERM)
try:
    a, b = Path({str(tmp_path / "a.csv")!r}), Path({str(tmp_path / "b.csv")!r})
    write_outputs({{a: first, b: killed}}, overwrite=True)
except cli.Terminated:
    sys.exit(143)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("price", ["sNaN", "1e999999", "0_08", "99999999999"])
def test_community_init_prices_that_are_no_price_are_one_line(tmp_path, price):
    """Found in a QA pass: sNaN and 1e999999 were decimal tracebacks, 0_08 was read as 8, and
    99999999999 failed while writing with a hint about integers."""
    r = peerwatt(
        "community", "init", "--community", "oak", "--validators", "4", "--broker-host", "b",
        "--timezone", "UTC", "--interval", "900", "--feed-in-price", "0.08", "--retail-price", price,
        "--out", str(tmp_path / "c"), stdin="",
    )  # fmt: skip
    one_line_error(r, "--retail-price", price)
    assert not (tmp_path / "c").exists()
