"""The massager application: config, wiring, session control, safety, MQTT, panel, CLI."""

__version__ = "0.1.0"
