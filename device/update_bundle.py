"""Signed update bundles: the manifest, Ed25519 keys, building a bundle and verifying one before unpacking.

A bundle is an uncompressed tar (the wheels are compressed already) holding, in this order,
``manifest.json`` (canonical JSON), ``manifest.sig`` (which key signed it and the signature) and the files
the manifest lists (``wheels/*.whl``) with their sizes and SHA-256 checksums. The signature covers the
manifest's canonical bytes, and the manifest covers every other byte, so one signature check and one
checksum per file prove the whole bundle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import platform
import re
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_BUNDLE_BYTES = 256 << 20  # nothing bigger is downloaded or opened
MAX_MANIFEST_BYTES = 64 << 10
MAX_FILES = 200
KEY_SUFFIX = ".pem"
CHUNK = 1 << 16
_VERSION = re.compile(r"\d{1,6}(\.\d{1,6}){0,3}")
_FILE_NAME = re.compile(r"wheels/[A-Za-z0-9_.+-]{1,200}\.whl")


class UpdateRefused(ValueError):
    """An update that may not be installed; ``code`` names the problem (signature, downgrade, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_version(text: str) -> tuple[int, ...]:
    """``1.2.3`` as a tuple of integers; raises UpdateRefused on anything else."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise UpdateRefused("manifest", f"version {text!r} is not of the form 1.2.3")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def canonical(data: Any) -> bytes:
    """The one byte form of a JSON value that is signed and checked."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def this_architecture() -> str:
    """The machine the firmware runs on (``aarch64`` on the Pi)."""
    return platform.machine() or "unknown"


def this_python() -> str:
    """The running Python's ``major.minor`` (the release venvs use the same interpreter)."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


# -- keys ------------------------------------------------------------------------------------------

def key_id(public: Ed25519PublicKey) -> str:
    """A short name of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private PKCS#8 PEM, mode 0600; public PEM); returns its key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(pem)
    public_path.write_bytes(public_pem(private.public_key()))
    return key_id(private.public_key())


def public_pem(public: Ed25519PublicKey) -> bytes:
    """A public key as PEM (what goes in the trusted key folder)."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def trusted_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in ``folder`` (``*.pem``) by key id; unreadable files are skipped."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not folder.is_dir():
        return keys
    for path in sorted(folder.glob(f"*{KEY_SUFFIX}")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError):
            continue
        if isinstance(key, Ed25519PublicKey):
            keys[key_id(key)] = key
    return keys


def sign(manifest: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, str]:
    """The ``manifest.sig`` object: the signing key's id and the signature of the canonical manifest."""
    return {"key_id": key_id(private.public_key()),
            "signature": base64.b64encode(private.sign(canonical(manifest))).decode()}


def verify_signature(manifest: dict[str, Any], signature: Any, keys: dict[str, Ed25519PublicKey],
                     keys_dir: Path | str = "the trusted key folder") -> str:
    """Check ``signature`` over ``manifest`` against the trusted keys; returns the key id, else refuses."""
    if not isinstance(manifest, dict):
        raise UpdateRefused("manifest", "the manifest is not a JSON object")
    if not isinstance(signature, dict) or not isinstance(signature.get("key_id"), str) \
            or not isinstance(signature.get("signature"), str):
        raise UpdateRefused("signature", "the signature is missing or malformed")
    kid = signature["key_id"]
    public = keys.get(kid)
    if public is None:
        raise UpdateRefused("key", f"signed by key {kid[:16]!r}, which is not trusted here "
                            f"({len(keys)} trusted keys in {keys_dir})")
    try:
        public.verify(base64.b64decode(signature["signature"], validate=True), canonical(manifest))
    except (InvalidSignature, ValueError):
        raise UpdateRefused("signature", f"the signature by key {kid} does not match the manifest "
                            "(tampered or corrupted)") from None
    return kid


# -- the manifest ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    """What a bundle says about itself (all of it signed)."""

    version: str
    min_version: str
    architecture: str
    python: str
    files: dict[str, tuple[int, str]]  # name -> (size in bytes, sha256 hex)
    created: int

    @property
    def payload_size(self) -> int:
        """The bytes of every listed file."""
        return sum(size for size, _ in self.files.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``manifest.json``, the ``updates/latest`` announcement)."""
        return {
            "format": FORMAT, "name": "massager", "version": self.version, "min_version": self.min_version,
            "architecture": self.architecture, "python": self.python, "created": self.created,
            "size": self.payload_size,
            "files": {name: {"size": size, "sha256": digest} for name, (size, digest) in self.files.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse and bound a manifest; raises UpdateRefused (code ``manifest``) naming the bad field."""
        def bad(field: str, problem: str) -> UpdateRefused:
            return UpdateRefused("manifest", f"manifest field {field}: {problem}")

        if not isinstance(data, dict):
            raise UpdateRefused("manifest", "the manifest is not a JSON object")
        if data.get("format") != FORMAT or data.get("name") != "massager":
            raise bad("format", f"expected format {FORMAT} of a massager bundle, got {data.get('format')!r}")
        for field in ("version", "min_version", "architecture", "python"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise bad(field, "missing or not a string")
        parse_version(data["version"])
        parse_version(data["min_version"])
        raw_files = data.get("files")
        if not isinstance(raw_files, dict) or not 0 < len(raw_files) <= MAX_FILES:
            raise bad("files", f"expected 1-{MAX_FILES} files")
        files: dict[str, tuple[int, str]] = {}
        for name, entry in raw_files.items():
            if not _FILE_NAME.fullmatch(name) or ".." in name:
                raise bad("files", f"file name {name!r} is not wheels/<name>.whl")
            size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BUNDLE_BYTES:
                raise bad(f"files.{name}.size", f"not a size in bytes: {size!r}")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise bad(f"files.{name}.sha256", "not a SHA-256 hex digest")
            files[name] = (size, digest)
        created = data.get("created", 0)
        if not isinstance(created, int) or isinstance(created, bool):
            raise bad("created", f"not a Unix time: {created!r}")
        manifest = cls(version=data["version"], min_version=data["min_version"],
                       architecture=data["architecture"], python=data["python"], files=files,
                       created=created)
        if data.get("size") != manifest.payload_size:
            raise bad("size", f"{data.get('size')!r} is not the sum of the file sizes "
                      f"({manifest.payload_size})")
        if manifest.payload_size > MAX_BUNDLE_BYTES:
            raise bad("size", f"{manifest.payload_size} bytes is more than the limit {MAX_BUNDLE_BYTES}")
        if manifest.firmware_wheel is None:
            raise bad("files", f"no firmware wheel wheels/massager-{manifest.version}-*.whl")
        return manifest

    @property
    def firmware_wheel(self) -> str | None:
        """The listed wheel of the firmware itself, of this version."""
        prefix = f"wheels/massager-{self.version}-"
        return next((name for name in self.files if name.startswith(prefix)), None)


def check_fits(manifest: Manifest, *, installed: str, architecture: str, python: str,
               force: bool = False) -> None:
    """Refuse a bundle for another machine, Python or an older (or the same) version unless ``force``."""
    if manifest.architecture not in (architecture, "any"):
        raise UpdateRefused("architecture", f"the bundle is for {manifest.architecture}; this unit is "
                            f"{architecture}")
    if manifest.python != python:
        raise UpdateRefused("python", f"the bundle's wheels are for Python {manifest.python}; this unit "
                            f"has Python {python}")
    new, current = parse_version(manifest.version), parse_version(installed)
    if current < parse_version(manifest.min_version):
        raise UpdateRefused("min_version", f"version {manifest.version} may only replace "
                            f"{manifest.min_version} or newer; this unit runs {installed}")
    if new <= current and not force:
        what = "the same version as" if new == current else "older than"
        raise UpdateRefused("downgrade", f"version {manifest.version} is {what} the installed {installed}; "
                            "a technician may force it (massager update --force)")


# -- building -------------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(wheels: list[Path], *, version: str, min_version: str, architecture: str, python: str,
                   created: int | None = None) -> Manifest:
    """The manifest of a bundle of ``wheels`` (one of them the firmware wheel of ``version``)."""
    files = {f"wheels/{w.name}": (w.stat().st_size, _sha256_file(w)) for w in sorted(wheels)}
    data = Manifest(version=version, min_version=min_version, architecture=architecture, python=python,
                    files=files, created=int(time.time()) if created is None else created).as_dict()
    return Manifest.from_dict(data)  # the same checks a unit makes


def _add(tar: tarfile.TarFile, name: str, data: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, data)


def write_bundle(out: Path, wheels: list[Path], manifest: Manifest, private: Ed25519PrivateKey) -> None:
    """Write the signed bundle to ``out`` (via ``out.partial``: it appears only complete)."""
    by_name = {f"wheels/{w.name}": w for w in wheels}
    manifest_bytes = canonical(manifest.as_dict())
    signature_bytes = canonical(sign(manifest.as_dict(), private))
    partial = out.with_name(out.name + ".partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            _add(tar, MANIFEST, io.BytesIO(manifest_bytes), len(manifest_bytes))
            _add(tar, SIGNATURE, io.BytesIO(signature_bytes), len(signature_bytes))
            for name in manifest.files:
                with open(by_name[name], "rb") as f:
                    _add(tar, name, f, manifest.files[name][0])
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def announcement(manifest: Manifest, private: Ed25519PrivateKey, *, url: str | None,
                 bundle_size: int | None) -> dict[str, Any]:
    """The retained ``<prefix>/updates/latest`` message: the signed manifest, where to get it, its size."""
    return {"manifest": manifest.as_dict(), "signature": sign(manifest.as_dict(), private), "url": url,
            "bundle_size": bundle_size}


# -- verifying ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, fit, sizes and checksums were all checked (nothing unpacked yet)."""

    path: Path
    manifest: Manifest
    key_id: str


def _read_member(tar: tarfile.TarFile, expected: str, limit: int) -> bytes:
    member = tar.next()
    if member is None or member.name != expected or not member.isreg():
        raise UpdateRefused("format", f"not a massager bundle: {expected} is not where it belongs")
    if member.size > limit:
        raise UpdateRefused("size", f"{expected} is {member.size} bytes; the limit is {limit}")
    stream = tar.extractfile(member)
    assert stream is not None
    data = stream.read()
    if len(data) != member.size:
        raise UpdateRefused("truncated", f"the bundle ends inside {expected} (truncated download?)")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise UpdateRefused("format", f"{what} is not valid JSON") from None


def iter_members(tar: tarfile.TarFile, manifest: Manifest) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """The bundle's files after the manifest and signature, each checked against the manifest's list."""
    seen: set[str] = set()
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError) as exc:
            raise UpdateRefused("truncated", f"the bundle is damaged or truncated ({exc})") from None
        if member is None:
            break
        name = member.name
        if name not in manifest.files or name in seen or not member.isreg():
            raise UpdateRefused("format", f"the bundle holds {name!r}, which the manifest does not list")
        size, _digest = manifest.files[name]
        if member.size != size:
            raise UpdateRefused("size", f"{name} is {member.size} bytes; the manifest says {size}")
        seen.add(name)
        yield name, member
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise UpdateRefused("truncated", f"the bundle lacks {', '.join(missing)} (truncated download?)")


def copy_checked(tar: tarfile.TarFile, member: tarfile.TarInfo, expected: tuple[int, str],
                 out: BinaryIO | None) -> None:
    """Stream one member (to ``out`` if given), refusing it when its size or SHA-256 is not the manifest's."""
    stream = tar.extractfile(member)
    assert stream is not None
    digest, total = hashlib.sha256(), 0
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise UpdateRefused("truncated", f"the bundle ends inside {member.name} ({exc}; truncated "
                                "download?)") from None
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        if out is not None:
            out.write(chunk)  # an OSError here (a full disk) is the installer's, not the bundle's
    if total != expected[0]:
        raise UpdateRefused("truncated", f"{member.name}: read {total} of {expected[0]} bytes "
                            "(truncated download?)")
    if digest.hexdigest() != expected[1]:
        raise UpdateRefused("checksum", f"{member.name}: SHA-256 {digest.hexdigest()[:16]}... is not the "
                            f"manifest's {expected[1][:16]}... (tampered or corrupted)")


def open_bundle(path: Path) -> tarfile.TarFile:
    """The bundle as a tar read front to back; refuses anything over the size limit or not a tar."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UpdateRefused("missing", f"{path}: {exc.strerror or exc}") from None
    if size > MAX_BUNDLE_BYTES:
        raise UpdateRefused("size", f"{path} is {size} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        return tarfile.open(path, "r|")
    except tarfile.TarError as exc:
        raise UpdateRefused("format", f"{path}: not a massager bundle ({exc})") from None


def read_manifest(tar: tarfile.TarFile, keys: dict[str, Ed25519PublicKey],
                  keys_dir: Path | str) -> tuple[Manifest, str]:
    """The first two members: the manifest, its signature checked against the trusted keys."""
    try:
        manifest_bytes = _read_member(tar, MANIFEST, MAX_MANIFEST_BYTES)
        signature_bytes = _read_member(tar, SIGNATURE, 4096)
    except (tarfile.TarError, EOFError) as exc:
        raise UpdateRefused("truncated", f"the bundle is damaged or truncated ({exc})") from None
    raw = _json(manifest_bytes, MANIFEST)
    if canonical(raw) != manifest_bytes:
        raise UpdateRefused("signature", f"{MANIFEST} is not in its signed (canonical) form (tampered?)")
    kid = verify_signature(raw, _json(signature_bytes, SIGNATURE), keys, keys_dir)
    return Manifest.from_dict(raw), kid


def verify_bundle(path: Path, *, keys_dir: Path, installed: str, architecture: str | None = None,
                  python: str | None = None, force: bool = False) -> VerifiedBundle:
    """Every check before anything is unpacked: signature, fit, version, sizes, checksums, nothing extra."""
    keys = trusted_keys(keys_dir)
    if not keys:
        raise UpdateRefused("key", f"no trusted update keys in {keys_dir}: every bundle is refused")
    with open_bundle(path) as tar:
        manifest, kid = read_manifest(tar, keys, keys_dir)
        check_fits(manifest, installed=installed, architecture=architecture or this_architecture(),
                   python=python or this_python(), force=force)
        last = None
        for name, member in iter_members(tar, manifest):
            copy_checked(tar, member, manifest.files[name], None)
            last = member
    assert last is not None  # a manifest lists at least one file, and all of them were there
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE
    if path.stat().st_size < end:  # every file whole, but the end-of-archive marker is missing
        raise UpdateRefused("truncated", f"{path.name} ends before its end-of-archive marker (truncated "
                            "download?)")
    return VerifiedBundle(path=path, manifest=manifest, key_id=kid)
