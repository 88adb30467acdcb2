"""``jisaku bundle``: signed update bundles of a kind's board code or a Pi app (docs/updates.md).

    jisaku bundle keygen                          the town's signing key, once, on the town's server
    jisaku bundle build kinds/snow_gauge/board --version 1.4.0      snow_gauge-1.4.0.bundle, signed
    jisaku bundle build ./my-app --version 2 --target printer_tray  a Pi app folder for a kind
    jisaku bundle build dist/jisaku-0.5-py3-none-any.whl --version 0.5  jisaku itself, for every Pi
    jisaku bundle verify snow_gauge-1.4.0.bundle --key bundle-signing.pub
    jisaku bundle publish snow_gauge-1.4.0.bundle   serve it to snow gauges (checked against the town's key)
    jisaku bundle list                            what is published
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import load_settings


def server_dir() -> Path:
    """The data folder beside jisaku.db, where the dashboard also looks for keys/ and bundles/."""
    return load_settings().sqlite_path.parent


def cmd_keygen(args: argparse.Namespace) -> None:
    from jisaku.gateway.bundle_signing import make_keys

    keys = make_keys(server_dir())
    # The private key's path only, never its contents: it must not end up in a terminal's scroll-back.
    print(f"signing key {keys.key_id} made.\n"
          f"  private: {keys.private} (owner-only; it is in every jisaku backup: keep those like a password)\n"
          f"  public:  {keys.public} — copy it to each device's state folder as bundle-signing.pub\n"
          f"  {keys.public.read_text().strip()}")


def kind_of(folder: Path, target: str | None) -> tuple[str, str]:
    """(kind, runs_on) of a folder: kinds/<kind>/board is a board's code, any other folder a Pi app."""
    folder = folder.resolve()
    runs_on = "board" if folder.name == "board" else "pi"
    if target:
        return target, runs_on
    if runs_on == "board":
        return folder.parent.name, runs_on
    if (folder / "kind.toml").exists():
        return folder.name, runs_on
    raise ValueError(f"which kind is {folder} for? Add --target KIND (the kind of the devices that get it)")


def cmd_build(args: argparse.Namespace) -> None:
    from jisaku.gateway.bundle_signing import build_bundle, load_private_key

    folder = Path(args.folder)
    if folder.suffix == ".whl":
        manifest, out = build_wheel_bundle(folder, args.version, args.out)
        print(f"{out}: jisaku {manifest.version} for Pis ({folder.name}), signed with key {manifest.key_id}")
        return
    kind, runs_on = kind_of(folder, args.target)
    runs_on = args.runs_on or runs_on
    out = Path(args.out) if args.out else Path(f"{kind}-{args.version}.bundle")
    manifest = build_bundle(folder, args.version, kind, runs_on, load_private_key(server_dir()), out)
    print(f"{out}: {kind} {manifest.version} for {runs_on}s, {len(manifest.files)} files,"
          f" {manifest.files_bytes:,} bytes, signed with key {manifest.key_id}")


def build_wheel_bundle(wheel: Path, version: str, out: str | None = None):
    """A bundle of kind ``jisaku`` holding the one wheel: a new jisaku for the Pis (device/wheels.py)."""
    import shutil
    import tempfile

    from jisaku.gateway.bundle_signing import build_bundle, load_private_key

    if not wheel.is_file() or not wheel.name.startswith("jisaku-"):
        raise SystemExit(f"jisaku bundle build: {wheel} is not a jisaku wheel (make one with"
                         " pip wheel --no-deps -w dist . in jisaku's source folder)")
    target = Path(out) if out else Path(f"jisaku-{version}.bundle")
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(wheel, Path(folder) / wheel.name)  # a bundle is made of a folder's files
        manifest = build_bundle(Path(folder), version, "jisaku", "pi", load_private_key(server_dir()), target)
    return manifest, target


def cmd_verify(args: argparse.Namespace) -> None:
    from jisaku.contract.bundles import BundleRefused, public_key_from_text, verify_bundle

    try:
        manifest = verify_bundle(Path(args.bundle), public_key_from_text(Path(args.key).read_text()))
    except BundleRefused as refused:
        raise SystemExit(f"jisaku bundle verify: REFUSED ({refused.reason}): {refused}") from None
    except OSError as err:  # a file name mistyped, say
        raise SystemExit(f"jisaku bundle verify: {err.strerror}: {err.filename}") from None
    print(f"{args.bundle}: good. {manifest.kind} {manifest.version} for {manifest.runs_on}s,"
          f" {len(manifest.files)} files, signed with key {manifest.key_id}")
    for entry in manifest.files:
        print(f"  {entry.size:>9,}  {entry.path}")


def _store():
    from jisaku.gateway.audit import AuditLog
    from jisaku.gateway.bundle_store import BundleStore
    from jisaku.gateway.db import Database

    settings = load_settings()
    return BundleStore(settings.sqlite_path.parent, AuditLog(Database(settings.sqlite_path)))


def cmd_publish(args: argparse.Namespace) -> None:
    from jisaku.contract.bundles import BundleRefused
    from jisaku.gateway.audit import cli_actor

    try:
        published, new = _store().publish(Path(args.bundle), cli_actor())
    except BundleRefused as refused:
        raise SystemExit(f"jisaku bundle publish: REFUSED ({refused.reason}): {refused}") from None
    except OSError as err:
        raise SystemExit(f"jisaku bundle publish: {err.strerror}: {err.filename}") from None
    print(f"{published.kind} {published.version} is {'published' if new else 'already published (the same file)'}:"
          f" {published.kind} devices download it from /api/v1/devices/<id>/bundles/{published.version}")


def cmd_list(args: argparse.Namespace) -> None:
    published = _store().bundles()
    if not published:
        print("no bundles published yet: jisaku bundle publish FILE")
    for bundle in published:
        print(f"{bundle.kind:<16} {bundle.version:<12} {bundle.runs_on:<6} {bundle.files:>4} files"
              f" {bundle.bytes:>10,} bytes  key {bundle.key_id}")


def add_parser(commands) -> None:
    bundle = commands.add_parser("bundle", help="signed update bundles for devices (docs/updates.md)")
    sub = bundle.add_subparsers(dest="bundle_command", required=True)
    keygen = sub.add_parser("keygen", help="make the town's signing key in the data folder (once)")
    keygen.set_defaults(run=cmd_keygen)
    build = sub.add_parser("build", help="a signed bundle of a kind's board/ folder, a Pi app folder,"
                           " or a jisaku .whl (for every Pi)")
    build.add_argument("folder", help="the folder, or a jisaku-*.whl file")
    build.add_argument("--version", required=True, help="letters, digits and . _ + -, e.g. 1.4.0")
    build.add_argument("--target", help="the kind it is for (default: from the folder, kinds/<kind>/board)")
    build.add_argument("--runs-on", choices=("board", "pi"),
                       help="default: board for a folder named board, pi for any other")
    build.add_argument("--out", help="the file to write (default <kind>-<version>.bundle)")
    build.set_defaults(run=cmd_build)
    verify = sub.add_parser("verify", help="check a bundle's signature and every file's hash")
    verify.add_argument("bundle")
    verify.add_argument("--key", required=True, help="the public key file (bundle-signing.pub)")
    verify.set_defaults(run=cmd_verify)
    publish = sub.add_parser("publish", help="serve a bundle to the devices of its kind (on the town's server)")
    publish.add_argument("bundle")
    publish.set_defaults(run=cmd_publish)
    listing = sub.add_parser("list", help="the published bundles, newest first")
    listing.set_defaults(run=cmd_list)
