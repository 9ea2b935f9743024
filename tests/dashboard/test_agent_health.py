"""Issue 17 item 7: the household page shows its own agent's health from the agent's retained
status on the broker (here the in-memory broker with MQTT semantics: retained messages, last
wills), with a clear warning and what to do when the agent is offline or its meter fails."""

from __future__ import annotations

import html as html_lib
import json

import pytest

from dashboard.agent_status import AgentStatusBoard
from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from tests.dashboard.conftest import login, make_app
from tests.dashboard.ledger_fixture import START


def _status(meter: str, **changes) -> bytes:
    status = {
        "state": "online",
        "meter": meter,
        "meter_ok": True,
        "fault": None,
        "last_reading": {"interval": START + 3600, "import_wh": 1000, "export_wh": 500},
        "outbox": 2,
        "awaiting_confirmation": 1,
        "meter_read_errors": 0,
        "alarms": [],
        "time": 1_000_000,
        **changes,
    }
    return json.dumps(status).encode()


@pytest.fixture
def wired(built, tmp_path):
    """A dashboard whose board is fed by a bus subscribed to status/+, and Sunny Villa's agent
    on the same broker with its last will 'offline'."""
    now = [1_000_000.0]
    community = built.community.community
    board = AgentStatusBoard(community, clock=lambda: now[0])
    broker = MemoryBroker()
    dashboard_bus = MemoryBus(broker, "dashboard")
    dashboard_bus.subscribe(board.pattern, board.handle)
    dashboard_bus.start()
    meter = built.meters[0]
    topic = Topics.status(community, meter)
    agent = MemoryBus(broker, meter, will=(topic, b"offline", True))
    agent.start()
    app = make_app(built, tmp_path / "instance", AGENT_STATUS=board)
    c = app.test_client()
    assert login(c, "villa").status_code == 302
    return c, agent, topic, meter, now


def _panel(client, meter) -> str:
    page = client.get(f"/household/{meter}").get_data(as_text=True)
    return html_lib.unescape(page.split('id="agent"', 1)[1].split("</section>", 1)[0])


def test_online_then_offline_after_the_last_will(wired):
    c, agent, topic, meter, now = wired
    agent.publish(topic, _status(meter), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online' in panel and "agent-warning" not in panel
    assert 'id="agent-outbox">2 / 1' in panel
    api = c.get(f"/api/v1/households/{meter}").get_json()["agent"]
    assert api["state"] == "online" and api["outbox"] == 2 and api["meter_read_errors"] == 0
    agent.crash()  # the connection drops: the broker publishes the agent's last will
    panel = _panel(c, meter)
    assert 'id="agent-state">offline' in panel
    assert "Your agent is offline" in panel and "last will" in panel
    assert "systemctl status peerwatt-agent" in panel and "peerwatt agent status" in panel
    assert c.get(f"/api/v1/households/{meter}").get_json()["agent"]["state"] == "offline"


def test_failing_meter_and_stale_status_are_warned(wired):
    c, agent, topic, meter, now = wired
    agent.publish(
        topic, _status(meter, meter_ok=False, fault="no answer from unit 1", meter_read_errors=7), retain=True
    )
    panel = _panel(c, meter)
    assert "Your agent cannot read your meter: no answer from unit 1." in panel
    assert "peerwatt meter read" in panel and 'id="agent-read-errors">7' in panel
    agent.publish(topic, _status(meter), retain=True)
    now[0] += 10 * 60
    panel = _panel(c, meter)
    assert "No status from your agent for 10 min" in panel


def test_a_late_dashboard_gets_the_retained_status(built, tmp_path):
    community = built.community.community
    broker = MemoryBroker()
    meter = built.meters[0]
    agent = MemoryBus(broker, meter, will=(Topics.status(community, meter), b"offline", True))
    agent.start()
    agent.publish(Topics.status(community, meter), _status(meter), retain=True)
    board = AgentStatusBoard(community, clock=lambda: 1_000_000.0)
    later = MemoryBus(broker, "dashboard")
    later.subscribe(board.pattern, board.handle)
    later.start()
    assert board.health(meter)["state"] == "online"
    assert board.health(built.meters[1])["state"] == "unknown"
    # other topics and junk are ignored, never an error
    board.handle(f"peerwatt/{community}/status/a/b", b"{}")
    board.handle("peerwatt/other/status/x", b"offline")
    board.handle(f"peerwatt/{community}/status/{meter}", b"\xff" * 10)
    assert board.health(meter)["state"] == "unknown"
    assert "could not be read" in board.health(meter)["warning"]


def test_without_a_broker_the_panel_says_so(as_villa, built):
    panel = _panel(as_villa, built.meters[0])
    assert "not connected to the community's broker" in panel


def test_cli_follows_the_agents_on_a_real_broker(built, tmp_path):
    """`peerwatt dashboard -c` with a [broker]: an agent's retained status on an MQTT broker
    (the embedded one) reaches the household page; a password in [broker] is refused."""
    import http.cookiejar
    import re
    import subprocess
    import sys
    import time
    import urllib.parse
    import urllib.request

    from peerwatt.broker.embedded import EmbeddedBroker
    from peerwatt.bus import BrokerConfig, MqttBus
    from peerwatt.dashboard_config import load_settings
    from tests.dashboard.conftest import PASSWORDS

    community = built.community.community
    meter = built.meters[0]
    make_app(built, tmp_path / "inst")  # index and the villa account
    with EmbeddedBroker() as broker:
        agent = MqttBus(
            BrokerConfig.from_url(broker.url), meter, will=(Topics.status(community, meter), b"offline", True)
        )
        agent.start()
        assert agent.wait_connected(10)
        agent.publish(Topics.status(community, meter), _status(meter, time=int(time.time())), retain=True)
        config = tmp_path / "dashboard.toml"
        config.write_text(
            f'data = "{built.data_dir}"\ninstance = "inst"\nlisten = "127.0.0.1:0"\n'
            f'broker_client_id = "dash-1"\n[broker]\nurl = "{broker.url}"\n'
        )
        assert load_settings(config).broker.url == broker.url
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerwatt.cli", "dashboard", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = [proc.stdout.readline() for _ in range(3)]
            url = next(line for line in lines if " on http" in line).split(" on ")[1].split(" ")[0]
            assert any(line.startswith("following the agents' status on") for line in lines), lines
            opener = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
            page = opener.open(url + "login", timeout=10).read().decode()
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            form = {"username": "villa", "password": PASSWORDS["villa"], "csrf_token": token}
            opener.open(url + "login", urllib.parse.urlencode(form).encode(), timeout=10)
            deadline = time.monotonic() + 15
            while True:
                data = json.loads(opener.open(f"{url}api/v1/households/{meter}", timeout=10).read())
                if data["agent"]["state"] == "online" or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert data["agent"]["state"] == "online" and data["agent"]["outbox"] == 2
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
            agent.stop()
    config.write_text(f'data = "{built.data_dir}"\n[broker]\nurl = "mqtt://127.0.0.1:1"\npassword = "x"\n')
    result = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "dashboard", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "password_file" in result.stderr and "\n" not in result.stderr.strip()


def test_last_receipt_and_enrolment_are_shown(wired):
    """The agent's ``last_receipt`` (height and time of the last receipt that verified) and
    ``enrolled`` appear in the panel and the API; an agent that verified none says so."""
    c, agent, topic, meter, now = wired
    agent.publish(topic, _status(meter, last_receipt=None, enrolled="unknown"), retain=True)
    panel = _panel(c, meter)
    assert "not reported by the agent" not in panel
    assert 'id="agent-last-receipt">none verified yet' in panel
    assert 'id="agent-enrolled">not known yet' in panel
    receipt = {"height": 42, "time": START + 3600, "kind": "settlement"}
    agent.publish(topic, _status(meter, last_receipt=receipt, enrolled=True), retain=True)
    panel = _panel(c, meter)
    checked = panel.split('id="agent-last-receipt">', 1)[1].split("</dd>", 1)[0]
    assert "block 42" in checked and "settlement" in checked and "/explorer/blocks/42" in checked
    assert 'id="agent-enrolled">yes' in panel
    api = c.get(f"/api/v1/households/{meter}").get_json()["agent"]
    assert api["last_receipt"] == receipt and api["enrolled"] is True
    agent.publish(topic, _status(meter, last_receipt={"height": "x"}, enrolled=False), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-last-receipt">none verified yet' in panel
    assert 'id="agent-enrolled" class="bad">no' in panel and "peerwatt member admit" in panel


def test_what_to_do_points_to_the_agents_troubleshooting_section():
    """The panel's what-to-do texts name docs/agent.md's "Troubleshooting" and the problems it
    covers; the section exists and has an entry for each, with the same commands."""
    import re
    from pathlib import Path

    from dashboard.agent_status import (
        WHAT_TO_DO_METER,
        WHAT_TO_DO_NOT_ENROLLED,
        WHAT_TO_DO_OFFLINE,
        WHAT_TO_DO_STATE,
    )

    doc = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    section = doc.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    entries = [e.lower() for e in re.findall(r"^- \*\*([^*]+)\*\*", section, re.M)]
    for text in (WHAT_TO_DO_OFFLINE, WHAT_TO_DO_METER, WHAT_TO_DO_STATE, WHAT_TO_DO_NOT_ENROLLED):
        assert 'docs/agent.md, "Troubleshooting"' in text
        named = text.rsplit("(", 1)[1].rstrip(").").split(", ")
        for problem in named:
            assert any(e.startswith(problem.lower()) for e in entries), (problem, entries)
        for command in re.findall(r"`([a-z]+ [a-z-]+)", text):  # e.g. `systemctl status ...`
            assert command in section, command


def test_a_meter_not_enrolled_is_a_red_warning_with_what_to_do(wired):
    """An agent that runs while the ledger refuses its meter (``enrolled: false``) trades nothing:
    the panel says so in red, with what to do, also next to another warning (a failing meter)."""
    c, agent, topic, meter, now = wired
    agent.publish(topic, _status(meter, enrolled=False), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online, meter not enrolled' in panel
    warning = panel.split('id="agent-enrolment-warning"', 1)[1].split("</div>", 1)[0]
    assert 'role="alert"' in panel.split('id="agent-enrolment-warning"', 1)[0].rsplit("<div", 1)[1]
    assert "Your meter is not enrolled on the community's ledger" in warning
    assert "peerwatt member admit" in warning and 'docs/agent.md, "Troubleshooting" (not enrolled)' in warning
    api = c.get(f"/api/v1/households/{meter}").get_json()["agent"]
    assert api["state"] == "not_enrolled" and api["enrolled"] is False
    assert api["enrolment_warning"].startswith("Your meter is not enrolled")
    # a failing meter keeps its own warning, and the enrolment one stays
    agent.publish(topic, _status(meter, enrolled=False, meter_ok=False, fault="no answer"), retain=True)
    panel = _panel(c, meter)
    assert (
        "Your agent cannot read your meter: no answer." in panel and 'id="agent-enrolment-warning"' in panel
    )
    # enrolled, or not known yet: no enrolment warning
    for enrolled in (True, "unknown"):
        agent.publish(topic, _status(meter, enrolled=enrolled), retain=True)
        panel = _panel(c, meter)
        assert "agent-enrolment-warning" not in panel and "agent-warning" not in panel


AGENT_PROCESS = """
import sys, time
from peerwatt.bus import BrokerConfig, MqttBus
url, topic, payload = sys.argv[1], sys.argv[2], sys.argv[3].encode()
bus = MqttBus(BrokerConfig.from_url(url), sys.argv[4], will=(topic, b"offline", True))
bus.start()
assert bus.wait_connected(10)
bus.publish(topic, payload, retain=True, on_ack=lambda: print("ready", flush=True))
time.sleep(60)
"""


def test_offline_warning_after_the_last_will_on_mosquitto(built, tmp_path, mosquitto):
    """On a real Mosquitto: an agent process (with the agent's last will, as `peerwatt agent`
    sets it) publishes its status, then dies without a DISCONNECT (SIGKILL, as in a power cut of
    the device); the broker publishes the will, and the household page turns to the red offline
    warning with what to do."""
    import subprocess
    import sys
    import time

    from peerwatt.bus import BrokerConfig, MqttBus

    community = built.community.community
    meter = built.meters[0]
    topic = Topics.status(community, meter)
    board = AgentStatusBoard(community)
    dashboard_bus = MqttBus(BrokerConfig.from_url(mosquitto.url), "dashboard")
    dashboard_bus.subscribe(board.pattern, board.handle)
    dashboard_bus.start()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AGENT_PROCESS,
            mosquitto.url,
            topic,
            _status(meter, time=int(time.time())).decode(),
            f"agent-{meter}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout.readline().strip() == "ready"
        app = make_app(built, tmp_path / "instance", AGENT_STATUS=board)
        c = app.test_client()
        assert login(c, "villa").status_code == 302
        assert dashboard_bus.wait_connected(10)
        deadline = time.monotonic() + 10
        while board.health(meter)["state"] != "online" and time.monotonic() < deadline:
            time.sleep(0.02)
        panel = _panel(c, meter)
        assert 'id="agent-state">online' in panel and "agent-warning" not in panel
        agent.kill()  # no DISCONNECT: the broker sees the connection drop and sends the last will
        agent.wait(10)
        deadline = time.monotonic() + 10
        while board.health(meter)["state"] != "offline" and time.monotonic() < deadline:
            time.sleep(0.02)
        panel = _panel(c, meter)
        assert 'id="agent-state">offline' in panel
        warning = panel.split('id="agent-warning"', 1)[1].split("</div>", 1)[0]
        assert "Your agent is offline" in warning and "last will" in warning
        assert "systemctl status peerwatt-agent" in warning and "journalctl -u peerwatt-agent" in warning
        assert c.get(f"/api/v1/households/{meter}").get_json()["agent"]["state"] == "offline"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        agent.stdout.close()
        dashboard_bus.stop()


def test_an_agent_that_cannot_save_its_state_is_warned(wired):
    """An agent whose state file cannot be written sends nothing (nothing leaves that is not
    durable): its status has ``state_error``; the panel warns in red with what to do."""
    c, agent, topic, meter, now = wired
    error = "cannot write agent state /var/lib/peerwatt/agent.sqlite: disk full"
    agent.publish(topic, _status(meter, state_error=error), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online, cannot save its state' in panel
    warning = panel.split('id="agent-warning"', 1)[1].split("</div>", 1)[0]
    assert f"Your agent cannot save its state ({error})" in warning
    assert "df -h /var/lib/peerwatt" in warning and '"Troubleshooting" (state file not writable)' in warning
    assert c.get(f"/api/v1/households/{meter}").get_json()["agent"]["state"] == "state_error"
    agent.publish(topic, _status(meter, state_error=None), retain=True)
    assert "agent-warning" not in _panel(c, meter)


def test_a_device_clock_behind_is_not_a_stale_status(wired):
    """A status that has just arrived is fresh, even when the device's clock runs a few minutes
    behind (the ledger accepts up to 5 minutes of skew, MAX_SKEW_S): it was dated by the agent's
    clock, and judging its age by that alone gave a false "no status for 4 min" warning. It turns
    stale 3 heartbeats after it arrived."""
    c, agent, topic, meter, now = wired
    agent.publish(topic, _status(meter, time=int(now[0]) - 250), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online' in panel and "agent-warning" not in panel
    now[0] += 3 * 60 + 1
    assert "No status from your agent for " in _panel(c, meter)


def test_a_status_nested_too_deep_is_unreadable_not_a_traceback(built):
    """Found in a QA pass: a meter may publish anything on its own status topic; 60,000 '['
    raised RecursionError in the dashboard's handler (a traceback logged per message)."""
    community = built.community.community
    board = AgentStatusBoard(community, clock=lambda: 1_000_000.0)
    meter = built.meters[0]
    board.handle(Topics.status(community, meter), b"[" * 60_000)  # no exception
    health = board.health(meter)
    assert health["state"] != "online", health


@pytest.mark.parametrize(
    "raw",
    [
        b'{"time": 1000000, "last_receipt": {"height": 5, "time": Infinity}}',
        b'{"time": 1000000, "last_reading": {"interval": "<img src=x>"}}',
        b'{"time": 1000000, "last_reading": {"interval": 1000000000000000000000000000000}}',
        b'{"time": 1000000, "last_receipt": {"height": 5, "time": 1000000000000000000}}',
        b'{"time": NaN}',
    ],
)
def test_a_status_with_times_that_are_not_times_is_no_500(wired, raw):
    """Found in a QA pass: an agent's own status topic took the household page (and the admin's
    view of it) down with a 500: Infinity (which Python's json reads), a string, or a number past
    the year 9999 where the page formats a time."""
    c, agent, topic, meter, now = wired
    agent.publish(topic, raw, retain=True)
    assert c.get(f"/household/{meter}").status_code == 200
    assert c.get(f"/api/v1/households/{meter}").status_code == 200


@pytest.mark.parametrize(
    "status",
    [
        {"state": "online", "last_receipt": {"height": 3, "time": 253402300799}},
        {"state": "online", "last_reading": {"interval": 253402300799}},
    ],
)
def test_agent_status_at_the_documented_time_bound_does_not_500(built, tmp_path, status):
    """Found in a QA pass: agent_status accepts times up to 9999-12-31 23:59:59 UTC, which in the
    community's Europe/Berlin is in the year 10000: the household page answered 500
    (OverflowError: date value out of range) formatting it."""
    board = AgentStatusBoard(built.community.community)
    app = make_app(built, tmp_path / "i", AGENT_STATUS=board, TESTING=False)
    board.handle(Topics.status(built.community.community, built.meters[0]), json.dumps(status).encode())
    c = app.test_client()
    login(c, "villa")
    page = c.get(f"/household/{built.meters[0]}")
    assert page.status_code == 200
    assert "10000-01-01 00:59" in page.get_data(as_text=True)


def test_an_agent_that_withholds_its_readings_is_warned(wired):
    """An agent whose last reading could not be signed (its meter's counters unavailable or not
    yet confirmed at the interval's end, e.g. a replaced meter reading 0) offers nothing until it
    signs one again (19918d4); the household sees why it sells nothing, not "online"."""
    c, agent, topic, meter, now = wired
    why = "the meter's counters read export_wh 0 (not available) at its end"
    agent.publish(topic, _status(meter, readings_withheld=why), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online, no offers (readings not signed)' in panel
    warning = panel.split('id="agent-warning"', 1)[1].split("</div>", 1)[0]
    assert "Your agent offers nothing for now: it could not sign your meter's last reading" in warning
    assert "export_wh 0 (not available)" in warning and "peerwatt meter read" in warning
    assert c.get(f"/api/v1/households/{meter}").get_json()["agent"]["state"] == "readings_withheld"
    agent.publish(topic, _status(meter, readings_withheld=None), retain=True)
    assert "agent-warning" not in _panel(c, meter)


def test_an_agent_reading_another_meter_says_so(wired):
    """An agent whose meter reports another serial than the one the ledger enrolled offers nothing
    (4933126); the household page said "online" with the alarm only in the alarm list."""
    c, agent, topic, meter, now = wired
    why = (
        "the meter reports serial 20240001, but the ledger enrolled serial 20240000 for meter key "
        f"{meter}: no offers while they differ"
    )
    agent.publish(topic, _status(meter, serial_mismatch=why), retain=True)
    panel = _panel(c, meter)
    assert 'id="agent-state">online, no offers (not the enrolled meter)' in panel
    warning = panel.split('id="agent-warning"', 1)[1].split("</div>", 1)[0]
    assert "Your agent offers nothing for now: the meter reports serial 20240001" in warning
    assert "Replacing the meter" in warning and "peerwatt meter probe" in warning
    assert c.get(f"/api/v1/households/{meter}").get_json()["agent"]["state"] == "serial_mismatch"
    agent.publish(topic, _status(meter, serial_mismatch=None), retain=True)
    assert "agent-warning" not in _panel(c, meter)


@pytest.mark.parametrize(
    "last_said",
    [{"serial_mismatch": "the meter reports serial 2"}, {"readings_withheld": "export_wh 0"},
     {"meter_ok": False, "fault": "no answer"}, {"state_error": "disk full"}],
)  # fmt: skip
def test_a_stale_status_is_stale_whatever_it_last_said(wired, last_said):
    """Found in a review: an agent whose last status said "no offers" (or a failing meter, or a
    state file it cannot write) and then fell silent read "online, no offers" for ever: the
    staleness of the status was checked only after what it said."""
    c, agent, topic, meter, now = wired
    agent.publish(topic, _status(meter, **last_said), retain=True)
    now[0] += 10 * 60
    panel = _panel(c, meter)
    assert 'id="agent-state">no recent status' in panel
    assert "No status from your agent for 10 min" in panel
