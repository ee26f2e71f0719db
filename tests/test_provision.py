"""scripts/provision: unique identities and credentials, the bundle on the boot partition, no secrets in logs,
and image/massager-apply-provision putting the bundle in place on a (temporary) root file system."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.image_fixtures import (
    BOOT_START,
    DEFAULT_TOML,
    REPO,
    SECTOR,
    built_image,
    card_copy,
    fat_list,
    fat_read,
    run_script,
)

BUNDLE = "massager-provision"
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def module_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A massager image, built once for the module (the build is test_build_image's)."""
    return built_image(tmp_path_factory.mktemp("image"))


@pytest.fixture
def image(module_image: Path, tmp_path: Path) -> Path:
    """A card of the test's own, not provisioned yet."""
    return card_copy(module_image, tmp_path)


def provision(
    target: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run scripts/provision with --json output."""
    return run_script("provision", target, "--json", *args, env=env)


def sheet_of(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The customer sheet of a successful run."""
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def bundle_file(image: Path, dest: str) -> str:
    """A file of the bundle on the boot partition, by its destination on the Pi."""
    data = fat_read(image, f"{BUNDLE}/files{dest}")
    assert data is not None, dest
    return data.decode()


def password_matches(line: str, password: str) -> bool:
    """Whether a mosquitto $7$ password line matches a password."""
    _user, hashed = line.split(":", 1)
    _, kind, iterations, salt, digest = hashed.split("$")
    assert kind == "7"
    computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return base64.b64encode(computed).decode() == digest


def test_provision_writes_the_bundle_and_prints_the_sheet(image: Path, tmp_path: Path) -> None:
    psk_file = tmp_path / "psk"
    psk_file.write_text(PASSPHRASE + "\n")
    sheet = sheet_of(
        provision(image, "--wifi-ssid", "Home Net", "--wifi-country", "GB", "--wifi-passphrase-file", psk_file)
    )
    device_id = str(sheet["device_id"])
    phone_user, phone_password = str(sheet["phone_user"]), str(sheet["phone_password"])

    listed = {}
    for line in (fat_read(image, f"{BUNDLE}/install.list") or b"").decode().splitlines():
        mode, group, dest = line.split()
        listed[dest] = (mode, group)
    assert listed == {
        "/etc/NetworkManager/system-connections/massager-wifi.nmconnection": ("0600", "root"),
        "/etc/hostname": ("0644", "root"),
        "/etc/massager/massager.toml": ("0640", "massager"),
        "/etc/massager/mqtt.secret": ("0640", "massager"),
        "/etc/mosquitto/massager.acl": ("0640", "mosquitto"),
        "/etc/mosquitto/massager.passwd": ("0640", "mosquitto"),
        "/etc/massager/remote.json": ("0644", "root"),
    }
    assert bundle_file(image, "/etc/hostname") == f"{device_id}\n"
    remote = json.loads(bundle_file(image, "/etc/massager/remote.json"))
    # Without a certificate there is no WebSockets listener (no network listener without TLS).
    assert remote == {"topic_prefix": "massager", "device_id": device_id, "websocket_port": None,
                      "websocket_path": "/", "websocket_tls": False, "phone_user": phone_user}
    assert sheet["remote"] is None

    config = tomllib.loads(bundle_file(image, "/etc/massager/massager.toml"))
    assert config["device_id"] == device_id
    assert config["mqtt"] == {
        "host": "localhost",
        "username": device_id,
        "password_file": "/etc/massager/mqtt.secret",
        "topic_prefix": "massager",
    }
    device_password = bundle_file(image, "/etc/massager/mqtt.secret").strip()

    passwd = bundle_file(image, "/etc/mosquitto/massager.passwd").splitlines()
    assert [ln.split(":")[0] for ln in passwd] == [device_id, phone_user]
    assert password_matches(passwd[0], device_password)
    assert password_matches(passwd[1], phone_password)
    assert phone_password not in fat_read_everything(image)  # only its hash is on the card

    acl = bundle_file(image, "/etc/mosquitto/massager.acl")
    assert f"user {phone_user}\n" in acl and f"topic write massager/{device_id}/cmd\n" in acl
    assert "@" not in acl

    wifi = bundle_file(image, "/etc/NetworkManager/system-connections/massager-wifi.nmconnection")
    psk = hashlib.pbkdf2_hmac("sha1", PASSPHRASE.encode(), b"Home Net", 4096, 32).hex()
    assert "ssid=Home Net\n" in wifi and f"psk={psk}\n" in wifi
    assert PASSPHRASE not in fat_read_everything(image)  # only the derived key is on the card
    assert (fat_read(image, "cmdline.txt") or b"").decode().rstrip().endswith(" cfg80211.ieee80211_regdom=GB")

    sums = (fat_read(image, f"{BUNDLE}/SHA256SUMS") or b"").decode().splitlines()
    for line in sums:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256(fat_read(image, f"{BUNDLE}/{rel}") or b"").hexdigest() == digest
    assert len(sums) == len(fat_list(image, BUNDLE)) - 1


def fat_read_everything(image: Path) -> str:
    """Every byte of the boot partition as text (to look for secrets that must not be there)."""
    with image.open("rb") as f:
        f.seek(BOOT_START * SECTOR)
        return f.read(16 << 20).decode("latin-1")


def test_provision_gives_unique_ids_and_credentials_across_runs(image: Path, tmp_path: Path) -> None:
    seen_ids, seen_passwords, seen_hashes = set(), set(), set()
    for n in range(5):
        card = tmp_path / f"card{n}.img"
        card.write_bytes(image.read_bytes())
        sheet = sheet_of(provision(card))
        seen_ids.add(sheet["device_id"])
        seen_passwords.add(sheet["phone_password"])
        seen_passwords.add(bundle_file(card, "/etc/massager/mqtt.secret").strip())
        seen_hashes.update(bundle_file(card, "/etc/mosquitto/massager.passwd").splitlines())
    assert len(seen_ids) == 5
    assert len(seen_passwords) == 10  # a device and a phone password per card, never shared
    assert len(seen_hashes) == 10
    assert all(len(str(p)) >= 24 for p in seen_passwords)


def test_provision_keeps_secrets_out_of_the_log(image: Path) -> None:
    proc = run_script(
        "provision",
        image,
        "--verbose",
        "--wifi-ssid",
        "Home Net",
        "--wifi-country",
        "DE",
        env={"MASSAGER_WIFI_PASSPHRASE": PASSPHRASE},
    )
    assert proc.returncode == 0, proc.stderr
    device_password = bundle_file(image, "/etc/massager/mqtt.secret").strip()
    phone_password = proc.stdout.split("Phone password", 1)[1].split()[0]
    assert phone_password in proc.stdout  # the customer sheet has it ...
    assert device_password not in proc.stdout  # ... but never the device's own secret
    for secret in (device_password, phone_password, PASSPHRASE):
        assert secret not in proc.stderr
    assert "provisioned massager-" in proc.stderr


def test_provision_refuses_a_card_that_already_has_settings_unless_forced(image: Path) -> None:
    first = sheet_of(provision(image))
    again = provision(image)
    assert again.returncode == 1
    assert "already has settings waiting for the first boot; --force replaces them" in again.stderr
    assert bundle_file(image, "/etc/hostname") == f"{first['device_id']}\n"
    forced = sheet_of(provision(image, "--force", "--device-id", "massager-test01", "--hostname", "spa-room-3"))
    assert forced["device_id"] == "massager-test01"
    assert bundle_file(image, "/etc/hostname") == "spa-room-3\n"
    assert "massager-test01" in bundle_file(image, "/etc/mosquitto/massager.passwd")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--device-id", "Bad ID!"], {}, "--device-id 'Bad ID!': use 4-42 lowercase letters"),
        (["--hostname=-x"], {}, "--hostname '-x': use 1-63 lowercase letters"),
        (["--wifi-ssid", "Home"], {}, "--wifi-ssid needs --wifi-country"),
        (
            ["--wifi-ssid", "Home", "--wifi-country", "gb"],
            {},
            "--wifi-country 'gb': use the two capital letters",
        ),
        (
            ["--wifi-ssid", "Home", "--wifi-country", "GB"],
            {"MASSAGER_WIFI_PASSPHRASE": "short"},
            "Wi-Fi passphrase: must be 8-63 printable ASCII characters, got 5",
        ),
        (["--tls-cert", "/nonexistent.crt"], {}, "--tls-cert and --tls-key go together"),
        (["--topic-prefix", "a/b"], {}, "--topic-prefix 'a/b': use 1-64 letters"),
    ],
)
def test_provision_refuses_bad_options(image: Path, args: list[str], env: dict[str, str], message: str) -> None:
    proc = run_script("provision", image, *args, env=env)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == ""
    assert fat_list(image, BUNDLE) == []


def test_provision_refuses_a_missing_or_foreign_target(tmp_path: Path) -> None:
    missing = run_script("provision", tmp_path / "nope.img")
    assert missing.returncode == 1 and "nope.img: no such image or device" in missing.stderr
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    proc = run_script("provision", junk)
    assert proc.returncode == 1 and "does not contain a recognized partition table" in proc.stderr


def test_provision_needs_a_passphrase_source_when_not_interactive(image: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MASSAGER_WIFI_PASSPHRASE"}
    proc = subprocess.run(
        [str(REPO / "scripts/provision"), str(image), "--wifi-ssid", "Home", "--wifi-country", "GB"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.returncode == 1
    assert (
        "--wifi-ssid needs a passphrase: --wifi-passphrase-file FILE or $MASSAGER_WIFI_PASSPHRASE"
        in proc.stderr
    )


def test_provision_carries_a_tls_listener_when_given_a_certificate(image: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nfake\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nfake\n")
    sheet = sheet_of(provision(image, "--tls-cert", cert, "--tls-key", key))
    assert sheet["broker"] == {"host": f"{sheet['device_id']}.local", "port": None, "tls_port": 8883}
    assert (
        bundle_file(image, "/etc/mosquitto/conf.d/massager-tls.conf")
        == (REPO / "image/mosquitto/massager-tls.conf").read_text()
    )
    assert bundle_file(image, "/etc/mosquitto/certs/massager.key") == key.read_text()
    # The phone remote's WebSockets listener comes with the certificate, over TLS.
    assert (
        bundle_file(image, "/etc/mosquitto/conf.d/massager-websockets.conf")
        == (REPO / "image/mosquitto/massager-websockets.conf").read_text()
    )
    remote = json.loads(bundle_file(image, "/etc/massager/remote.json"))
    assert remote["websocket_port"] == 9001 and remote["websocket_tls"] is True
    assert sheet["remote"] == {"url": f"https://{sheet['device_id']}.local/", "websocket_port": 9001}
    installed = (fat_read(image, f"{BUNDLE}/install.list") or b"").decode()
    assert "0640 mosquitto /etc/mosquitto/certs/massager.key" in installed
    # The page comes over HTTPS with the same certificate; lighttpd (www-data) reads its own copy of the key.
    assert "0640 www-data /etc/massager/remote/massager.key" in installed
    assert bundle_file(image, "/etc/massager/remote/massager.key") == key.read_text()
    assert bundle_file(image, "/etc/massager/remote/massager.crt") == cert.read_text()
    tls = bundle_file(image, "/etc/massager/remote/tls.conf")
    assert "@" not in tls.replace("(@...@)", "")
    for line in ('ssl.pemfile = "/etc/massager/remote/massager.crt"',
                 'ssl.privkey = "/etc/massager/remote/massager.key"',
                 '$SERVER["socket"] == ":443" { ssl.engine = "enable" }',
                 '$SERVER["socket"] == "[::]:443" { ssl.engine = "enable" }',
                 'url.redirect = ("" => "https://%1${url.path}${qsa}")'):
        assert line in tls, line


def test_apply_provision_installs_the_bundle_and_shreds_it(image: Path, tmp_path: Path) -> None:
    sheet = sheet_of(
        provision(
            image,
            "--wifi-ssid",
            "Home Net",
            "--wifi-country",
            "GB",
            env={"MASSAGER_WIFI_PASSPHRASE": PASSPHRASE},
        )
    )
    boot, root = tmp_path / "boot", tmp_path / "root"
    boot.mkdir()
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "var/lib/systemd/rfkill").mkdir(parents=True)
    (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").write_text("1\n")
    subprocess.run(
        ["mcopy", "-s", "-n", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::/{BUNDLE}", str(boot)],
        check=True,
        capture_output=True,
        env={**os.environ, "MTOOLSRC": "/dev/null"},
    )

    proc = subprocess.run(
        [str(REPO / "image/massager-apply-provision")],
        capture_output=True,
        text=True,
        env={**os.environ, "MASSAGER_ROOT": str(root), "MASSAGER_BOOT": str(boot)},
    )
    assert proc.returncode == 0, proc.stderr

    device_id = str(sheet["device_id"])
    assert (root / "etc/hostname").read_text() == f"{device_id}\n"
    assert (root / "etc/hosts").read_text() == f"127.0.0.1\tlocalhost\n127.0.1.1\t{device_id}\n"
    modes = {
        "etc/massager/mqtt.secret": 0o640,
        "etc/massager/massager.toml": 0o640,
        "etc/mosquitto/massager.passwd": 0o640,
        "etc/mosquitto/massager.acl": 0o640,
        "etc/NetworkManager/system-connections/massager-wifi.nmconnection": 0o600,
    }
    for rel, mode in modes.items():
        assert stat.S_IMODE((root / rel).stat().st_mode) == mode, rel
    assert tomllib.loads((root / "etc/massager/massager.toml").read_text())["device_id"] == device_id
    assert (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"
    assert not (boot / BUNDLE).exists()  # no secret left on the FAT partition

    again = subprocess.run(
        [str(REPO / "image/massager-apply-provision")],
        capture_output=True,
        text=True,
        env={**os.environ, "MASSAGER_ROOT": str(root), "MASSAGER_BOOT": str(boot)},
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_apply_provision_refuses_a_damaged_bundle(image: Path, tmp_path: Path) -> None:
    sheet_of(provision(image))
    boot, root = tmp_path / "boot", tmp_path / "root"
    boot.mkdir()
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["mcopy", "-s", "-n", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::/{BUNDLE}", str(boot)],
        check=True,
        capture_output=True,
        env={**os.environ, "MTOOLSRC": "/dev/null"},
    )
    (boot / BUNDLE / "files/etc/hostname").write_text("evil\n")
    proc = subprocess.run(
        [str(REPO / "image/massager-apply-provision")],
        capture_output=True,
        text=True,
        env={**os.environ, "MASSAGER_ROOT": str(root), "MASSAGER_BOOT": str(boot)},
    )
    assert proc.returncode != 0
    assert "files/etc/hostname: FAILED" in proc.stdout + proc.stderr
    assert not (root / "etc/hostname").exists()
    assert (boot / BUNDLE).exists()  # kept for the next try


def test_provision_starts_from_the_cards_config(image: Path) -> None:
    sheet = sheet_of(provision(image))
    text = bundle_file(image, "/etc/massager/massager.toml")
    assert text.startswith(DEFAULT_TOML.decode().split("\n", 1)[0])  # the wheel's example config, edited
    assert f'device_id = "{sheet["device_id"]}"' in text


def test_provisioned_config_from_the_shipped_example_passes_the_firmwares_validation(image: Path) -> None:
    from device.config import load_config

    sheet = sheet_of(provision(image, "--config", REPO / "device/default.toml"))
    config_file = image.parent / "massager.toml"
    config_file.write_text(bundle_file(image, "/etc/massager/massager.toml"))
    config = load_config(config_file, {})
    assert config.device_id == sheet["device_id"]
    assert config.mqtt.username == sheet["device_id"]
    assert config.mqtt.password_file == Path("/etc/massager/mqtt.secret")
    assert config.mqtt.password is None


def test_provision_text_sheet_has_the_remote_address_and_its_qr_code(image: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nfake\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nfake\n")
    proc = run_script("provision", image, "--tls-cert", cert, "--tls-key", key)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[1]
    assert first.startswith("  Phone remote    https://massager-") and ".local/ " in first
    if shutil.which("qrencode"):
        assert "█" in proc.stdout or "▀" in proc.stdout  # the QR code, drawn with block characters


def test_provision_text_sheet_says_the_remote_needs_a_certificate(image: Path) -> None:
    proc = run_script("provision", image)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        "  Phone remote    none: it needs a certificate (provision with --tls-cert/--tls-key)"
    )


def test_provision_name_and_area_reach_the_device_section(image: Path) -> None:
    from device.config import load_config

    provision(image, "--config", REPO / "device/default.toml", "--name", "Grandma's massager",
              "--area", "Living room")
    config_file = image.parent / "massager.toml"
    config_file.write_text(bundle_file(image, "/etc/massager/massager.toml"))
    config = load_config(config_file, {})
    assert (config.device.name, config.device.suggested_area) == ("Grandma's massager", "Living room")


def test_provision_refuses_an_unprintable_name(image: Path) -> None:
    proc = provision(image, "--name", "a\nb")
    assert proc.returncode != 0 and "--name" in proc.stderr
