"""Published update bundles: kept in the data folder, checked against the town's key on the way in.

    data/bundles/<kind>/<version>.bundle

A bundle is accepted only when the town's public key (data/keys/bundle-signing.pub, made by
``jisaku bundle keygen``) verifies it, so a bundle on this server is one a device will accept.
A version names one bundle per kind: publishing the same file again is harmless, but other
bytes under a version already published are refused (a device half-way through downloading
it would otherwise get a mix of two bundles).

Example::

    store = BundleStore(Path("data"), AuditLog(db))
    published, new = store.publish(Path("snow_gauge-1.4.0.bundle"), actor="tanaka")
    store.path_of("snow_gauge", "1.4.0")      # what a snow gauge downloads
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jisaku.contract.bundles import KIND, VERSION, BundleRefused, Manifest, read_header, verify_bundle

from .audit import AuditLog
from .bundle_signing import load_public_key

FOLDER = "bundles"
SUFFIX = ".bundle"


class NoTownKey(RuntimeError):
    """The server has no public key to check bundles with."""


class VersionTaken(RuntimeError):
    """Another bundle was published under this kind and version."""


@dataclass(frozen=True)
class PublishedBundle:
    kind: str
    runs_on: str
    version: str
    made: float
    key_id: str
    files: int
    bytes: int
    sha256: str  # of the whole file, so an operator can compare it with the one they built


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for piece in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(piece)
    return digest.hexdigest()


def _described(path: Path, manifest: Manifest) -> PublishedBundle:
    return PublishedBundle(manifest.kind, manifest.runs_on, manifest.version, manifest.made, manifest.key_id,
                           len(manifest.files), path.stat().st_size, _sha256(path))


class BundleStore:
    def __init__(self, data_dir: Path, audit: AuditLog | None = None):
        self.data_dir = Path(data_dir)
        self.folder = self.data_dir / FOLDER
        self.audit = audit

    def scratch_file(self) -> Path:
        """A new empty file in the store's folder for an upload, so publishing it is a rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=self.folder)
        os.close(descriptor)
        return Path(name)

    def public_key(self) -> bytes:
        key = load_public_key(self.data_dir)
        if key is None:
            raise NoTownKey("this server has no bundle key yet: run jisaku bundle keygen on it, then build"
                            " bundles there (or restore the backup that holds data/keys)")
        return key

    def publish(self, source: Path, actor: str) -> tuple[PublishedBundle, bool]:
        """Keep the bundle at ``source`` (verified first); ``(what it is, False if it was already here)``.

        Raises :class:`BundleRefused`, :class:`NoTownKey` or :class:`VersionTaken`; ``source`` is
        left where it was.
        """
        manifest = verify_bundle(Path(source), self.public_key())
        target = self.path_for(manifest.kind, manifest.version)
        if target.exists():
            if _sha256(target) == _sha256(Path(source)):
                return _described(target, manifest), False
            raise VersionTaken(f"{manifest.kind} {manifest.version} was published before with other contents:"
                               " give the new bundle a new --version")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, partial)
        with open(partial, "rb") as stream:
            os.fsync(stream.fileno())
        partial.replace(target)  # a device never sees half a bundle
        published = _described(target, manifest)
        if self.audit is not None:
            self.audit.record(actor, "bundle.publish", f"{manifest.kind}/{manifest.version}",
                              after={"runs_on": published.runs_on, "files": published.files,
                                     "bytes": published.bytes, "sha256": published.sha256,
                                     "key_id": published.key_id})
        return published, True

    def path_for(self, kind: str, version: str) -> Path:
        if not KIND.match(kind) or not VERSION.match(version):  # both are part of a file name
            raise BundleRefused("format", f"{kind!r} {version!r} is not a kind and a version")
        return self.folder / kind / f"{version}{SUFFIX}"

    def path_of(self, kind: str, version: str) -> Path | None:
        """The published bundle of ``kind`` named ``version``, or None."""
        try:
            path = self.path_for(kind, version)
        except BundleRefused:
            return None
        return path if path.is_file() else None

    def bundles(self) -> list[PublishedBundle]:
        """Every published bundle, newest first."""
        found = []
        for path in self.folder.glob(f"*/*{SUFFIX}"):
            with open(path, "rb") as stream:
                found.append(_described(path, read_header(stream).manifest))
        return sorted(found, key=lambda bundle: -bundle.made)
