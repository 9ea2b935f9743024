"""Open the reader for an agent's [meter] table: a Modbus meter with its profile, a P1 port, or
a German meter's SML optical port, a Shelly Pro 3EM's HTTP RPC API, or values on the household's
own MQTT broker.

``open_reader(meter_config, clock)`` returns an object with ``read() -> MeterSample`` and
``close()``, and the profile name the agent puts in its readings. Every source raises the same
``MeterError`` subclasses, so the agent treats them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from meter_agent.config import MeterConfig

P1_DEFAULT_PORT = 23  # many P1 Wi-Fi dongles serve the raw telegrams on port 23 (telnet)


def open_reader(meter: MeterConfig, clock: Callable[[], float] = time.time) -> tuple[Any, str]:
    """(reader, profile name) for ``meter``; raises ``ProfileError`` for an unknown profile."""
    if meter.source == "mqtt":
        from meter_agent.mqtt_source import PROFILE_NAME as MQTT_PROFILE
        from meter_agent.mqtt_source import MqttSource

        return MqttSource(meter.mqtt, timeout_s=max(meter.timeout_s, 2.0), clock=clock), MQTT_PROFILE
    if meter.source == "shelly-http":
        from meter_agent.shelly_http import DEFAULT_PORT, ShellyHttpReader
        from meter_agent.shelly_http import PROFILE_NAME as SHELLY_PROFILE

        assert meter.host is not None
        reader = ShellyHttpReader(
            meter.host, meter.port or DEFAULT_PORT, timeout_s=max(meter.timeout_s, 2.0), clock=clock
        )
        return reader, SHELLY_PROFILE
    if meter.source == "sml":
        from meter_agent.modbus_reader import TcpTarget
        from meter_agent.sml import PROFILE_NAME as SML_PROFILE
        from meter_agent.sml import SML_BAUDRATE, SmlReader, SmlSerialTarget

        if meter.host is not None:
            assert meter.port is not None
            sml_target: Any = TcpTarget(meter.host, meter.port)
        else:
            assert meter.serial_device is not None
            sml_target = SmlSerialTarget(meter.serial_device, meter.baudrate or SML_BAUDRATE)
        # SML meters push a file every 1-4 s: wait at least 5 s for one
        return SmlReader(sml_target, timeout_s=max(meter.timeout_s, 5.0), clock=clock), SML_PROFILE
    if meter.source == "p1":
        from meter_agent.modbus_reader import TcpTarget
        from meter_agent.p1 import P1_BAUDRATE, PROFILE_NAME, TELEGRAM_WAIT_S, P1Reader, P1SerialTarget

        target: Any
        if meter.host is not None:
            target = TcpTarget(meter.host, meter.port or P1_DEFAULT_PORT)
        else:
            assert meter.serial_device is not None
            target = P1SerialTarget(meter.serial_device, meter.baudrate or P1_BAUDRATE)
        # a DSMR 4 meter sends a telegram every 10 s: wait as long for one (DSMR 5's come every second)
        return P1Reader(target, timeout_s=max(meter.timeout_s, TELEGRAM_WAIT_S), clock=clock), PROFILE_NAME
    from meter_agent.modbus_reader import MeterReader, SerialTarget, TcpTarget
    from meter_agent.profile import find_profile

    profile = find_profile(meter.profile, meter.profile_dirs)
    if meter.host is not None:
        modbus_target: Any = TcpTarget(meter.host, meter.port or profile.transport.tcp_port)
    else:
        assert meter.serial_device is not None
        modbus_target = SerialTarget(meter.serial_device, meter.baudrate or profile.transport.baudrate)
    reader = MeterReader(
        profile,
        modbus_target,
        unit_id=meter.unit,
        timeout_s=meter.timeout_s,
        close_between_polls=meter.close_between_polls,
        clock=clock,
    )
    return reader, profile.name
