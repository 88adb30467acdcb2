"""Update bundles: one file with a signed manifest and the files of one version of a kind's code.

The town's server makes and signs bundles (gateway/bundle_signing.py); devices and the server
check them with this module, so it lives in contract/, where device/ can import it.

A bundle is plain bytes that a small board can also read line by line and then in pieces::

    jisaku-bundle 1\\n                      the format, and its version
    <signature>\\n                          128 hex digits: Ed25519 over the manifest's bytes
    <manifest length>\\n                    in bytes, decimal
    <manifest>                              that many bytes of UTF-8 JSON (below)
    <file 1><file 2>…                       every file's bytes, in the manifest's order

    {"format": 1, "kind": "snow_gauge", "runs_on": "board", "version": "1.4.0",
     "made": 1764720000.0, "key_id": "3f2a…", "files": [{"path": "main.py", "size": 812, "sha256": "…"}]}

Why not tar or zip: MicroPython has no zip module, and a tar needs parsing of 512-byte headers
with their own traps (links, long names); here the manifest says where every file starts,
so a board can fetch one file's bytes with an HTTP Range request.

The signature covers the manifest, and the manifest holds every file's SHA-256, so one key check
plus one hash per file proves every byte came from whoever holds the town's private key.

Example::

    key = public_key_from_text(Path("bundle-signing.pub").read_text())
    manifest = verify_bundle(Path("snow_gauge-1.4.0.bundle"), key)      # BundleRefused if anything is off
    unpack_bundle(Path("snow_gauge-1.4.0.bundle"), manifest, Path("app/1.4.0"))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"jisaku-bundle 1\n"
FORMAT = 1
# What the town's server and devices accept at most. A board's flash has ~1.5 MB for files and
# a Pi app folder is a few hundred kB of Python: 16 MiB leaves room without letting a mistake
# (a folder with a video in it) fill a Pi's SD card or the server's disk.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_BYTES = 256 * 1024
MAX_FILES = 1000
RUNS_ON = ("board", "pi")

VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}\Z")  # it is part of a URL: no '/'
KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")  # as contract/kinds.py's KIND_ID
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}\Z")


class BundleRefused(ValueError):
    """A bundle that must not be installed; the message says what is wrong and what to do.

    ``reason`` is a short word for logs and the operator pages: signature, hash, path, size, format.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BundleFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    kind: str
    runs_on: str
    version: str
    made: float
    key_id: str
    files: tuple[BundleFile, ...]

    @property
    def files_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def as_json(self) -> dict:
        return {"format": FORMAT, "kind": self.kind, "runs_on": self.runs_on, "version": self.version,
                "made": self.made, "key_id": self.key_id,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files]}


@dataclass(frozen=True)
class Header:
    """What the start of a bundle says: the signature, the manifest, and where the files begin."""

    signature: bytes
    manifest_bytes: bytes
    manifest: Manifest
    files_offset: int

    @property
    def total_bytes(self) -> int:
        return self.files_offset + self.manifest.files_bytes


# ---------------------------------------------------------------- keys


def key_id(public_key: bytes) -> str:
    """A short name for a public key, so a refusal can say which key signed and which was expected."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_from_text(text: str) -> bytes:
    """The 32 bytes of a public key file (64 hex digits, as ``jisaku bundle keygen`` writes it)."""
    cleaned = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", cleaned):
        raise BundleRefused("key", "not a jisaku public key: expected 64 hex digits, as jisaku bundle keygen"
                                   " writes to bundle-signing.pub")
    return bytes.fromhex(cleaned)


def check_signature(manifest_bytes: bytes, signature: bytes, public_key: bytes) -> None:
    """Refuse unless ``signature`` is the town key's Ed25519 signature of ``manifest_bytes``."""
    # Imported here: only what checks signatures needs the cryptography package.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, manifest_bytes)
    except InvalidSignature:
        raise BundleRefused("signature", "the bundle's signature does not match the town's public key: it was"
                                         " changed after signing, or signed with another key. Build and sign"
                                         " it again with jisaku bundle build on the town's server") from None


# ---------------------------------------------------------------- the manifest


def check_path(path: str) -> str:
    """``path`` if it stays inside the folder it will be unpacked into; else refused.

    Only plain relative names with '/' between them: no '..', no absolute path, no '\\' or
    drive letter (a Windows-made bundle), no hidden names, so unpacking can never write elsewhere.
    """
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or not all(PATH_PART.match(part) for part in parts):
        raise BundleRefused("path", f"the file name {path!r} could write outside the folder it is unpacked"
                                    " into (absolute, '..', '\\\\' or a hidden name): the bundle is refused")
    return path


def parse_manifest(data: bytes) -> Manifest:
    """The manifest of a bundle, every field checked; refused with what is wrong."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleRefused("format", "the bundle's manifest is not JSON: the file is damaged") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleRefused("format", f"the bundle's manifest is not format {FORMAT}: update jisaku")
    kind, runs_on, version = raw.get("kind"), raw.get("runs_on"), raw.get("version")
    if not isinstance(kind, str) or not KIND.match(kind):
        raise BundleRefused("format", f"the manifest's kind {kind!r} is not a kind name")
    if runs_on not in RUNS_ON:
        raise BundleRefused("format", f"the manifest's runs_on {runs_on!r} is not 'board' or 'pi'")
    if not isinstance(version, str) or not VERSION.match(version):
        raise BundleRefused("format", f"the manifest's version {version!r} is not letters, digits and . _ + -")
    files = raw.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise BundleRefused("format", f"a bundle holds 1 to {MAX_FILES} files")
    checked, seen = [], set()
    for entry in files:
        if not isinstance(entry, dict):
            raise BundleRefused("format", "a file entry of the manifest is not an object")
        path = check_path(entry.get("path"))
        size, sha256 = entry.get("size"), entry.get("sha256")
        if type(size) is not int or size < 0 or not isinstance(sha256, str) or not SHA256.match(sha256):
            raise BundleRefused("format", f"{path}: the manifest's size or sha256 is not valid")
        if path.lower() in seen:  # twice, or twice on a case-blind file system
            raise BundleRefused("path", f"{path} is in the bundle twice")
        seen.add(path.lower())
        checked.append(BundleFile(path, size, sha256))
    made, signer = raw.get("made"), raw.get("key_id")
    if not isinstance(made, (int, float)) or not isinstance(signer, str):
        raise BundleRefused("format", "the manifest lacks 'made' or 'key_id'")
    manifest = Manifest(kind, runs_on, version, float(made), signer, tuple(checked))
    if manifest.files_bytes > MAX_BUNDLE_BYTES:
        raise BundleRefused("size", f"the bundle's files add up to {manifest.files_bytes:,} bytes, more than"
                                    f" the {MAX_BUNDLE_BYTES:,} a bundle may hold")
    return manifest


def manifest_bytes(manifest: Manifest) -> bytes:
    """The exact bytes that are signed (keys sorted, no spaces), so anyone can rebuild them."""
    return json.dumps(manifest.as_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- reading a bundle


def _line(stream: BinaryIO, limit: int, what: str) -> bytes:
    line = stream.readline(limit + 1)
    if not line.endswith(b"\n"):
        raise BundleRefused("format", f"this is not a jisaku bundle ({what} is missing or too long)")
    return line[:-1]


def read_header(stream: BinaryIO) -> Header:
    """The signature and manifest at the start of a bundle (the signature is not checked here)."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise BundleRefused("format", "this is not a jisaku bundle (it does not start with 'jisaku-bundle 1'):"
                                      " make one with jisaku bundle build")
    try:
        signature = bytes.fromhex(_line(stream, 128, "the signature").decode("ascii"))
        length = int(_line(stream, 10, "the manifest's length"))
    except ValueError:
        raise BundleRefused("format", "this is not a jisaku bundle (its signature or length is not a number)") from None
    if len(signature) != 64 or not 0 < length <= MAX_MANIFEST_BYTES:
        raise BundleRefused("format", "this is not a jisaku bundle (bad signature or manifest length)")
    data = stream.read(length)
    if len(data) != length:
        raise BundleRefused("size", "the bundle ends inside its manifest: the download is incomplete")
    return Header(signature, data, parse_manifest(data), stream.tell())


def verify_bundle(path: Path, public_key: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> Manifest:
    """The manifest of the bundle at ``path`` once its signature, size and every file's hash are right.

    Refused (:class:`BundleRefused`) on anything else, before anything is unpacked.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise BundleRefused("size", f"the bundle is {size:,} bytes, more than the {max_bytes:,} allowed")
    with open(path, "rb") as stream:
        header = read_header(stream)
        if header.manifest.key_id != key_id(public_key):
            raise BundleRefused("signature", f"the bundle was signed with key {header.manifest.key_id}, but this"
                                             f" device trusts key {key_id(public_key)}: copy the town's"
                                             " bundle-signing.pub to it, or sign with the town's key")
        check_signature(header.manifest_bytes, header.signature, public_key)
        if size != header.total_bytes:
            raise BundleRefused("size", f"the bundle is {size:,} bytes but its manifest says {header.total_bytes:,}:"
                                        " the download is incomplete or has extra bytes")
        for entry in header.manifest.files:
            digest = hashlib.sha256()
            left = entry.size
            while left:
                piece = stream.read(min(left, 64 * 1024))
                digest.update(piece)
                left -= len(piece)
            if digest.hexdigest() != entry.sha256:
                raise BundleRefused("hash", f"{entry.path}: its bytes do not match the hash in the signed"
                                            " manifest: the bundle was damaged or changed. Download it again")
    return header.manifest


def unpack_bundle(path: Path, manifest: Manifest, folder: Path) -> None:
    """Write a verified bundle's files into ``folder`` (which must not exist yet).

    Call :func:`verify_bundle` first; the paths are checked again here all the same.
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    with open(path, "rb") as stream:
        read_header(stream)
        for entry in manifest.files:
            target = folder / check_path(entry.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                left = entry.size
                while left:
                    piece = stream.read(min(left, 64 * 1024))
                    if not piece:
                        raise BundleRefused("size", f"{entry.path}: the bundle ends early")
                    out.write(piece)
                    left -= len(piece)
                out.flush()
                os.fsync(out.fileno())
