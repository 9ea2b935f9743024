"""peerwatt wiring: the CLI, config files, the MQTT bus, node runner, embedded broker and demo."""

__version__ = "0.1.0"
