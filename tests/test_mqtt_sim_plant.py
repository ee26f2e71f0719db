"""The simulated plant over MQTT, black-box: ``massager run --sim --plant-seed N`` against a real mosquitto,
new plant faults with parameters accepted and shown on ``sim/plant``, bad ones refused naming the field."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from device.sim import DEADMAN_HW_S
from drivers.sim.plant import PlantParams
from tests.conftest import Broker
from tests.mqtt_support import BASE, DEVICE_ID, Watcher, mqtt_config, running_firmware, watching

REPO = Path(__file__).resolve().parent.parent
START_S = 30.0  # a cold interpreter on a busy machine


async def inject(w: Watcher, payload: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Publish on ``sim/fault`` and return the reply that echoes its id."""
    await w.client.publish(f"{BASE}/sim/fault", json.dumps(payload).encode(), qos=1)
    reply = await w.wait_for(f"{BASE}/sim/fault/reply", lambda s: s.json()["id"] == payload["id"],
                             timeout=timeout)
    answer: dict[str, Any] = reply.json()
    return answer


async def plant_where(w: Watcher, match: Any, *, after: int = 0, timeout: float = 5.0) -> dict[str, Any]:
    """The first ``sim/plant`` truth (from index ``after``) for which ``match`` is true."""
    seen = await w.wait_for(f"{BASE}/sim/plant", lambda s: match(s.json()), after=after, timeout=timeout)
    truth: dict[str, Any] = seen.json()
    return truth


async def test_mqtt_sim_plant_seed_draws_the_plant_and_new_faults_take_parameters(
    broker: Broker, tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", "from device.cli import main; raise SystemExit(main())",
            "run", "--sim", "--plant-seed", "7", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port),
            "--device-id", DEVICE_ID, "--state-dir", str(tmp_path / "state")]
    log = (tmp_path / "massager.log").open("wb")
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        async with watching(broker.port, f"{BASE}/#") as w:
            first = await plant_where(w, lambda t: True, timeout=START_S)
            drawn = dataclasses.replace(PlantParams.draw(7), deadman_timeout_s=DEADMAN_HW_S)
            assert first["params"] == json.loads(json.dumps(drawn.as_dict()))
            assert first["params"] != PlantParams(deadman_timeout_s=DEADMAN_HW_S).as_dict()
            assert first["fault_params"] == {} and first["relay_closed"] is False

            answer = await inject(w, {"fault": "leak", "zone": "calf", "rate": 0.5, "id": "L1"})
            assert answer["ok"], answer
            mark = len(w.seen)
            truth = await plant_where(w, lambda t: "leak" in t["faults"], after=mark)
            assert truth["fault_params"]["leak"]["zone"] == "calf"
            assert truth["fault_params"]["leak"]["rate"] == 0.5

            for payload, field, words in (
                ({"fault": "pump_weak", "flow": 3, "id": "B1"}, "flow", "(0, 1]"),
                ({"fault": "leak", "zone": "foot", "id": "B2"}, "rate", "missing"),
                ({"fault": "thermistor_drift", "sensor": "pad_7", "rate_c_per_s": 0.1, "id": "B3"}, "sensor",
                 "pad_1, pad_2"),
                ({"fault": "divider_supply", "factor": "high", "id": "B4"}, "factor", "got 'high'"),
                ({"fault": "relay_welded", "strength": 2, "id": "B5"}, "strength", "no parameter"),
            ):
                refused = await inject(w, payload)
                assert not refused["ok"], refused
                assert refused["error"].startswith(f"{field}: ") and words in refused["error"], refused
            later = await plant_where(w, lambda t: True, after=len(w.seen))
            assert set(later["fault_params"]) == {"leak"}  # the refused ones changed nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "massager.log").read_text()


async def test_mqtt_sim_welded_relay_shows_closed_contacts_with_the_relay_pin_off(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        rig = fw.app.rig
        assert rig is not None
        idle = await plant_where(w, lambda t: True)
        assert idle["params"] == json.loads(json.dumps(rig.plant.params.as_dict()))  # the nominal plant
        assert idle["params"]["pump_flow"] == PlantParams().pump_flow
        assert (await inject(w, {"fault": "relay_welded", "id": "W1"}))["ok"]
        welded = await plant_where(w, lambda t: "relay_welded" in t["faults"], after=len(w.seen))
        assert welded["relay_closed"] is True and welded["outputs"]["relay"] is False
        assert welded["fault_params"]["relay_welded"]["since_s"] >= 0
        assert (await inject(w, {"fault": "clear", "id": "C1"}))["ok"]
        cleared = await plant_where(w, lambda t: not t["faults"], after=len(w.seen))
        assert cleared["relay_closed"] is False and cleared["fault_params"] == {}
