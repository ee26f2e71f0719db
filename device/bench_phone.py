"""The benchmark's phone: an MQTT 5 client in its own process, as a real phone is.

``python -m device.bench_phone PORT CLIENT_ID RESPONSE_TOPIC`` reads one JSON line per command on stdin
(``{"topic": ..., "command": {...}, "correlation": "..."}``), publishes it with the response topic and
the correlation data, and writes JSON lines to stdout: ``{"sent": correlation, "t": ...}`` just before
each publish and ``{"reply": correlation, "t": ..., "ok": ...}`` when its reply arrives. Times are
``time.monotonic()``, the system-wide clock the firmware's mock pins stamp with, so the bench compares
them directly. In the bench's own process, the client's thread waited for the GIL behind the firmware's
event loop (the interpreter's 5 ms switch interval), which added up to that much to every reply.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO


def serve(port: int, client_id: str, response_topic: str, commands: TextIO, out: TextIO) -> None:
    """Send each command line from ``commands``; report sends and replies on ``out`` until EOF."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    lock = threading.Lock()
    subscribed = threading.Event()

    def write(line: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(line) + "\n")
            out.flush()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        arrived = time.monotonic()
        correlation = getattr(message.properties, "CorrelationData", None)
        if message.topic == response_topic and correlation is not None:
            write({"reply": bytes(correlation).decode(), "t": arrived, "ok": b'"ok":true' in message.payload})

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(response_topic, qos=0)
    subscribed.wait(10)
    write({"ready": subscribed.is_set()})
    try:
        for line in commands:
            request = json.loads(line)
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            properties.CorrelationData = request["correlation"].encode()
            payload = json.dumps(request["command"]).encode()
            t0 = time.monotonic()
            client.publish(request["topic"], payload, qos=0, properties=properties)
            write({"sent": request["correlation"], "t": t0})
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.stdin, sys.stdout)
