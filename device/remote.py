"""The phone remote's files and a private host for it (``scripts/sim --web``, the browser tests).

The remote is a static web app (``remote/`` in the repository) that speaks MQTT over WebSockets to the
device's mosquitto. Nothing here runs inside the firmware process: on the device lighttpd serves the page
(``massager-remote.service``) and mosquitto has a WebSockets listener. ``RemoteHost`` starts the same two
servers, with the same config files, on free loopback ports for a developer or a test.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.config import load_config
from device.notice import SAFETY_NOTICE
from device.programs_cmd import describe
from modes import limits
from modes.library import load_library

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
REMOTE_DIR = REPO / "remote"
BUILTIN_JSON = REMOTE_DIR / "builtin.json"
WS_LISTENER_CONF = REPO / "image" / "mosquitto" / "massager-websockets.conf"
BROKER_CONF = REPO / "image" / "mosquitto" / "massager.conf"
ACL_TEMPLATE = REPO / "image" / "mosquitto" / "massager.acl.in"
LIGHTTPD_TEMPLATE = REPO / "image" / "remote" / "lighttpd.conf"
LIGHTTPD_TLS_TEMPLATE = REPO / "image" / "remote" / "lighttpd-tls.conf"
WS_PORT = 9001  # the device's WebSockets listener (image/mosquitto/massager-websockets.conf)
START_TIMEOUT_S = 15.0
PBKDF2_ITERATIONS = 1000


def builtin_data() -> dict[str, Any]:
    """What the page shows without asking the device: built-in programs, limits, the safety notice."""
    config = load_config(None, {"programs_dir": None})
    library, _problems = load_library(None)
    programs = []
    for name in library.names():
        default_min = config.session.timer_default_min
        full = describe(library.get(name), source="built-in", timer_default_min=default_min)
        programs.append({k: full[k] for k in ("name", "description", "suits", "fills_timer", "duration_min")})
    return {
        "generated_by": "python -m device.remote --write-builtin (checked by tests/test_remote_files.py)",
        "programs": programs,
        "safety_notice": SAFETY_NOTICE,
        "limits": {
            "intensity_min": limits.INTENSITY_MIN,
            "intensity_max": limits.INTENSITY_MAX,
            "heat_target_min_c": limits.HEAT_TARGET_MIN_C,
            "heat_target_max_c": limits.HEAT_TARGET_MAX_C,
            "timer_min_min": limits.TIMER_MIN_MIN,
            "timer_max_min": limits.TIMER_MAX_MIN,
        },
    }


def builtin_json() -> str:
    """``remote/builtin.json`` as it should read."""
    return json.dumps(builtin_data(), indent=2, ensure_ascii=False) + "\n"


def device_json(*, topic_prefix: str, device_id: str, websocket_port: int = WS_PORT,
                websocket_tls: bool = True, phone_user: str | None = None) -> str:
    """The page's per-device settings (no secret): served as ``/device.json``."""
    data: dict[str, Any] = {"topic_prefix": topic_prefix, "device_id": device_id,
                            "websocket_port": websocket_port, "websocket_path": "/",
                            "websocket_tls": websocket_tls}
    if phone_user is not None:
        data["phone_user"] = phone_user
    return json.dumps(data, indent=2) + "\n"


def render_lighttpd(*, port: int, bind: str, root: Path, cache: Path, device_json_path: Path,
                    errorlog: Path, pidfile: Path, extra: str = "") -> str:
    """image/remote/lighttpd.conf with its marked values filled in."""
    text = LIGHTTPD_TEMPLATE.read_text()
    for mark, value in (("@PORT@", str(port)), ("@BIND@", bind), ("@ROOT@", str(root)), ("@CACHE@", str(cache)),
                        ("@DEVICE_JSON@", str(device_json_path)), ("@ERRORLOG@", str(errorlog)),
                        ("@PIDFILE@", str(pidfile)), ("@EXTRA@", extra)):
        text = text.replace(mark, value)
    return text


def render_lighttpd_tls(*, https_port: int, bind: str, cert: Path, key: Path) -> str:
    """image/remote/lighttpd-tls.conf (the page over HTTPS, plain HTTP redirected) for one address and port."""
    text = LIGHTTPD_TLS_TEMPLATE.read_text()
    for mark, value in (("@SOCKET@", f"{bind}:{https_port}"), ("@CERT@", str(cert)), ("@KEY@", str(key)),
                        ("@EXTRA@", ""), ("@PORT_SUFFIX@", "" if https_port == 443 else f":{https_port}")):
        text = text.replace(mark, value)
    return text


# mosquitto.conf(5) options that belong to the listener block above them.
_LISTENER_OPTIONS = frozenset({
    "listener", "protocol", "http_dir", "socket_domain", "bind_interface", "certfile", "keyfile", "cafile",
    "capath", "crlfile", "ciphers", "ciphers_tls1.3", "tls_version", "require_certificate", "dhparamfile",
    "use_identity_as_username", "use_subject_as_username", "psk_hint", "mount_point", "max_connections",
    "tls_engine", "tls_keyform", "tls_engine_kpass_sha1", "websockets_log_level", "websockets_headers_size",
    "use_username_as_clientid", "max_qos", "max_topic_alias",
})  # left before any listener, mosquitto 2.0 opens a default listener for them: 1883 on every interface


def global_settings(conf: str) -> str:
    """A mosquitto config without its listener blocks (the host opens its own listeners on free ports)."""
    kept = []
    for line in conf.splitlines():
        words = line.split()
        if words and not line.lstrip().startswith("#") and words[0] in _LISTENER_OPTIONS:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def mosquitto_hash(password: str) -> str:
    """A mosquitto password file hash ($7$: PBKDF2-SHA512), as scripts/provision writes it."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {logfile.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:g} s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """Terminate ``proc`` and wait up to ``timeout_s`` for it to end, then kill it."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RemoteHost:
    """mosquitto (plain + WebSockets listeners, users and ACL like a provisioned device) and lighttpd.

    Users: the device (``device_id``), the phone (``<device_id>-phone``) and, for the simulator and the
    tests only, ``developer`` and ``developer-2`` (one user a connection, should the broker tie client ids
    to user names), who may read and write everything below the device's topics (``sim/...``).
    """

    workdir: Path
    device_id: str = "sim"
    topic_prefix: str = "massager"
    bind: str = "127.0.0.1"
    tls: bool = True  # the WebSockets listener with TLS, as on a device (a self-signed certificate here)
    mqtt_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)  # the page over HTTPS (with ``tls``), as on a device
    device_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    phone_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    developer_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    broker: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None

    @property
    def phone_user(self) -> str:
        """The phone's user name, as scripts/provision names it."""
        return f"{self.device_id}-phone"

    @property
    def base(self) -> str:
        """The device's topic root."""
        return f"{self.topic_prefix}/{self.device_id}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate of the WebSockets listener (with ``tls``)."""
        return self.workdir / "massager.crt"

    @property
    def url(self) -> str:
        """The page's address (HTTPS with ``tls``, as on a device; its plain port redirects there)."""
        host = "127.0.0.1" if self.bind in ("127.0.0.1", "0.0.0.0") else self.bind
        return f"https://{host}:{self.https_port}/" if self.tls else f"http://{host}:{self.http_port}/"

    @property
    def plain_url(self) -> str:
        """The page's plain-HTTP address (with ``tls`` it only redirects to ``url``)."""
        host = "127.0.0.1" if self.bind in ("127.0.0.1", "0.0.0.0") else self.bind
        return f"http://{host}:{self.http_port}/"

    def prepare(self) -> None:
        """Write the web root, the broker's users, ACL and config, and lighttpd's config."""
        w = self.workdir
        root = w / "www"
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(REMOTE_DIR, root)
        (w / "cache").mkdir(exist_ok=True)
        (w / "device.json").write_text(device_json(topic_prefix=self.topic_prefix, device_id=self.device_id,
                                                   websocket_port=self.ws_port, websocket_tls=self.tls,
                                                   phone_user=self.phone_user))
        (w / "massager.passwd").write_text("".join(
            f"{user}:{mosquitto_hash(password)}\n"
            for user, password in ((self.device_id, self.device_password),
                                   (self.phone_user, self.phone_password),
                                   ("developer", self.developer_password),
                                   ("developer-2", self.developer_password))))
        acl = ACL_TEMPLATE.read_text()
        for mark, value in (("@PREFIX@", self.topic_prefix), ("@DISCOVERY@", "homeassistant"),
                            ("@DEVICE_ID@", self.device_id), ("@DEVICE_USER@", self.device_id),
                            ("@PHONE_USER@", self.phone_user)):
            acl = acl.replace(mark, value)
        acl += (f"\n# scripts/sim and the tests only: the simulator's topics and a developer who sees all.\n"
                f"user {self.device_id}\ntopic write {self.base}/sim/#\ntopic read {self.base}/sim/fault\n"
                f"\nuser developer\ntopic readwrite {self.base}/#\n"
                f"\nuser developer-2\ntopic readwrite {self.base}/#\n")
        (w / "massager.acl").write_text(acl)
        for name in ("massager.passwd", "massager.acl"):
            (w / name).chmod(0o600)
        # The shipped files, rewritten only where this machine differs from the Pi: ports and paths.
        conf = global_settings(BROKER_CONF.read_text()).replace("/etc/mosquitto/", f"{w}/")
        conf += f"\nlistener {self.mqtt_port} {self.bind}\n"
        ws = re.sub(r"^listener \d+.*$", f"listener {self.ws_port}", WS_LISTENER_CONF.read_text(), flags=re.M)
        if self.tls:
            self._self_signed()
            ws = ws.replace("/etc/mosquitto/certs/", f"{w}/")
        else:  # plain WebSockets: only for scripts/sim --web on loopback
            ws = "\n".join(ln for ln in ws.splitlines() if ln.split()[:1] not in (["certfile"], ["keyfile"],
                                                                                  ["tls_version"]))
        head = "user root\n" if os.geteuid() == 0 else ""  # as root it drops to 'mosquitto', who cannot read w
        (w / "mosquitto.conf").write_text(head + "persistence false\n" + conf + "\n" + ws)
        (w / "lighttpd.conf").write_text(render_lighttpd(
            port=self.http_port, bind=self.bind, root=root, cache=w / "cache",
            device_json_path=w / "device.json",
            errorlog=w / "lighttpd.log", pidfile=w / "lighttpd.pid",
            extra=render_lighttpd_tls(https_port=self.https_port, bind=self.bind, cert=self.ca_file,
                                      key=w / "massager.key") if self.tls else ""))

    def _self_signed(self) -> None:
        """A certificate for 127.0.0.1 and localhost, as scripts/provision --tls-cert would bring."""
        key = self.workdir / "massager.key"
        if key.exists():
            return
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=massager-sim", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(key), "-out", str(self.ca_file)],
            check=True, capture_output=True,
        )

    def start_broker(self) -> None:
        """Start mosquitto and wait until both listeners accept connections."""
        logfile = self.workdir / "mosquitto.log"
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen([mosquitto, "-c", str(self.workdir / "mosquitto.conf")],
                                       stdout=logfile.open("ab"), stderr=subprocess.STDOUT)
        _wait_listening(self.broker, self.mqtt_port, "mosquitto", logfile)
        _wait_listening(self.broker, self.ws_port, "mosquitto (WebSockets)", logfile)

    def stop_broker(self) -> None:
        """Stop mosquitto (the page then shows that the connection is lost)."""
        stop_process(self.broker)
        self.broker = None

    def start_web(self) -> None:
        """Start lighttpd and wait until it accepts connections."""
        logfile = self.workdir / "lighttpd.out"
        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        self.web = subprocess.Popen([lighttpd, "-D", "-f", str(self.workdir / "lighttpd.conf")],
                                    stdout=logfile.open("ab"), stderr=subprocess.STDOUT)
        _wait_listening(self.web, self.http_port, "lighttpd", logfile)
        if self.tls:
            _wait_listening(self.web, self.https_port, "lighttpd (HTTPS)", logfile)

    def start(self) -> RemoteHost:
        """Prepare and start both servers (on fresh ports again if another process took one meanwhile)."""
        for attempt in range(3):
            self.prepare()
            try:
                self.start_broker()
                self.start_web()
                return self
            except RuntimeError as exc:
                self.stop()
                if "in use" not in str(exc) or attempt == 2:
                    raise
                log.info("a port was taken meanwhile (%s); trying fresh ones", exc)
                self.mqtt_port, self.ws_port, self.http_port = free_port(), free_port(), free_port()
                self.https_port = free_port()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        stop_process(self.web)
        self.web = None
        self.stop_broker()

    def firmware_config(self, state_dir: Path) -> Path:
        """A firmware config that logs in as the device on the plain listener (written to the workdir)."""
        path = self.workdir / "massager.toml"
        path.write_text(
            f'device_id = "{self.device_id}"\nstate_dir = "{state_dir}"\n\n[mqtt]\nhost = "127.0.0.1"\n'
            f"port = {self.mqtt_port}\nusername = \"{self.device_id}\"\npassword = \"{self.device_password}\"\n"
            f'topic_prefix = "{self.topic_prefix}"\n'
        )
        return path


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def sim_web_main(argv: list[str]) -> int:
    """``scripts/sim --web``: a private broker and web server, the simulated device, and the page's URL."""
    parser = argparse.ArgumentParser(prog="sim --web",
                                     description="The simulated device with its phone remote.")
    parser.add_argument("--lan", action="store_true",
                        help="listen on every interface (a phone on the same network can open the page)")
    parser.add_argument("--http-port", type=int, default=None, help="the page's port (default: a free one)")
    args, rest = parser.parse_known_args(argv)
    missing = [tool for tool in ("mosquitto", "lighttpd")
               if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]
    if missing:
        print(f"sim --web: not installed: {', '.join(missing)} (run scripts/bootstrap)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops it even when started from a script's background job, which inherits SIGINT ignored
    # (the firmware started below then inherits the default action, not the ignore)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="massager-remote-") as tmp:
        work = Path(tmp)
        # On the network the WebSockets listener has TLS, as on a device; on loopback plain is simpler.
        host = RemoteHost(work, bind="0.0.0.0" if args.lan else "127.0.0.1", tls=args.lan)
        if args.http_port:
            host.http_port = args.http_port
        firmware: subprocess.Popen[bytes] | None = None
        try:
            host.start()
            config = host.firmware_config(work / "state")
            print(
                f"\nPhone remote:  {host.url}\n"
                f"  user {host.phone_user}  password {host.phone_password}\n"
                + ("  (self-signed certificate: accept it when the page opens; if it then cannot connect,\n"
                   f"   open https://<this host>:{host.ws_port}/ once and accept it too)\n" if host.tls else "")
                + f"  MQTT {host.bind}:{host.mqtt_port}, WebSockets {host.ws_port}; developer / "
                f"{host.developer_password} may read and write {host.base}/# (sim/plant, sim/fault)\n",
                flush=True,
            )
            cmd = [sys.executable, "-m", "device", "run", "--sim", "--config", str(config), *rest]
            firmware = subprocess.Popen(cmd)
            return firmware.wait()
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) at any moment, start-up included
            if firmware is not None:
                # Ctrl-C reaches the whole process group: give the firmware its own graceful stop first.
                with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
                    firmware.wait(3)
            return 0
        finally:
            stop_process(firmware)  # the firmware publishes "offline" and vents before the broker goes
            host.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m device.remote --write-builtin | --check-builtin | sim [...]``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sim"]:
        return sim_web_main(args[1:])
    if args == ["--write-builtin"]:
        BUILTIN_JSON.write_text(builtin_json())
        return 0
    if args == ["--check-builtin"]:
        ok = BUILTIN_JSON.is_file() and BUILTIN_JSON.read_text() == builtin_json()
        print("remote/builtin.json is current" if ok else "remote/builtin.json is stale: --write-builtin")
        return 0 if ok else 1
    print("usage: python -m device.remote --write-builtin | --check-builtin | sim [--lan] [run options]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
