"""The town's signing key, and building signed update bundles from a folder.

The private key signs; only the town's server has it. Devices get the public key and check
every bundle with it (contract/bundles.py). Both live in the data folder::

    data/keys/bundle-signing.key    the private key (PEM), readable by its owner only;
                                    in every jisaku backup (gateway/backup.py) — keep those like a password
    data/keys/bundle-signing.pub    the public key, 64 hex digits: copy it to each device

Example::

    keys = make_keys(Path("data"))                          # once, on the town's server
    manifest = build_bundle(Path("kinds/snow_gauge/board"), "1.4.0", "snow_gauge", "board",
                            load_private_key(Path("data")), Path("snow_gauge-1.4.0.bundle"))
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jisaku.contract.bundles import (MAGIC, MAX_BUNDLE_BYTES, MAX_FILES, BundleFile, BundleRefused, Manifest,
                                     check_path, key_id, manifest_bytes)

KEYS = "keys"
PRIVATE = "bundle-signing.key"
PUBLIC = "bundle-signing.pub"
# Not put in a bundle: Python's caches, and hidden files (.git, an editor's swap file, .DS_Store).
LEFT_OUT_DIRS = ("__pycache__",)
LEFT_OUT_SUFFIXES = (".pyc", ".swp", "~")


class SigningKeyError(RuntimeError):
    """No key, or a key that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path
    key_id: str


def key_paths(data_dir: Path) -> tuple[Path, Path]:
    folder = Path(data_dir) / KEYS
    return folder / PRIVATE, folder / PUBLIC


def make_keys(data_dir: Path) -> KeyFiles:
    """A new Ed25519 key pair in ``data_dir/keys``; refuses to replace one (devices trust the old one)."""
    private_path, public_path = key_paths(data_dir)
    if private_path.exists():
        raise SigningKeyError(f"{private_path} exists: devices already trust it. To start over with a new key,"
                        " move it away yourself, then copy the new public key to every device")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(private_path.parent, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created readable by the owner only from the first byte on (not chmod after writing).
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_path.write_text(public.hex() + "\n", encoding="ascii")
    return KeyFiles(private_path, public_path, key_id(public))


def load_private_key(data_dir: Path) -> Ed25519PrivateKey:
    private_path, _ = key_paths(data_dir)
    if not private_path.exists():
        raise SigningKeyError(f"no signing key at {private_path}: run jisaku bundle keygen on the town's server"
                        " (or restore the backup that holds it)")
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{private_path} is not an Ed25519 key: make one with jisaku bundle keygen")
    return key


def load_public_key(data_dir: Path) -> bytes | None:
    """The town's public key, or None when no key was made yet."""
    from jisaku.contract.bundles import public_key_from_text

    _, public_path = key_paths(data_dir)
    return public_key_from_text(public_path.read_text(encoding="ascii")) if public_path.exists() else None


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """``(path in the bundle, file)`` for every file under ``folder``, sorted, caches and hidden files left out."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise BundleRefused("path", f"{folder} is not a folder: give a kind's board/ folder or a Pi app folder")
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in LEFT_OUT_DIRS)
        for name in sorted(files):
            if name.startswith(".") or name.endswith(LEFT_OUT_SUFFIXES):
                continue
            path = Path(root) / name
            # A link to a file outside the folder would put that file (say, a secret) in the bundle.
            if path.is_symlink() and not path.resolve().is_relative_to(folder):
                raise BundleRefused("path", f"{path} links outside {folder}: copy the file in instead")
            found.append((check_path(path.relative_to(folder).as_posix()), path))
    if not found:
        raise BundleRefused("path", f"{folder} has no files to put in a bundle")
    if len(found) > MAX_FILES:
        raise BundleRefused("size", f"{folder} has {len(found)} files; a bundle holds at most {MAX_FILES}")
    return found


def build_bundle(folder: Path, version: str, kind: str, runs_on: str, key: Ed25519PrivateKey,
                 out: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Manifest:
    """Write a signed bundle of every file in ``folder`` to ``out``; the manifest it holds."""
    from jisaku.contract.bundles import parse_manifest

    files = folder_files(folder)
    on_disk = sum(path.stat().st_size for _, path in files)
    if on_disk > max_bytes:
        raise BundleRefused("size", f"{folder}'s files add up to {on_disk:,} bytes, more than the {max_bytes:,}"
                                    " a bundle may hold: leave large files (pictures, logs) out of the folder")
    # Read once, then hash and write the same bytes: a file saved meanwhile cannot slip in unhashed.
    contents = [path.read_bytes() for _, path in files]
    entries = tuple(BundleFile(name, len(data), hashlib.sha256(data).hexdigest())
                    for (name, _), data in zip(files, contents))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    manifest = Manifest(kind, runs_on, version, round(time.time(), 3), key_id(public), entries)
    signed = manifest_bytes(manifest)
    parse_manifest(signed)  # the same checks a device makes: a bad version or kind is refused here, not there
    total = len(MAGIC) + 129 + len(str(len(signed))) + 1 + len(signed) + manifest.files_bytes
    if total > max_bytes:
        raise BundleRefused("size", f"the bundle would be {total:,} bytes, more than the {max_bytes:,} allowed:"
                                    " leave large files (pictures, logs) out of the folder")
    out = Path(out)
    partial = out.with_name(out.name + ".tmp")
    with open(partial, "wb") as stream:
        stream.write(MAGIC)
        stream.write(key.sign(signed).hex().encode("ascii") + b"\n")
        stream.write(str(len(signed)).encode("ascii") + b"\n")
        stream.write(signed)
        for data in contents:
            stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(out)
    return manifest
