"""``jisaku bundle``: signed update bundles of a kind's board code or a Pi app (docs/updates.md).

    jisaku bundle keygen                          the town's signing key, once, on the town's server
    jisaku bundle build kinds/snow_gauge/board --version 1.4.0      snow_gauge-1.4.0.bundle, signed
    jisaku bundle build ./my-app --version 2 --target printer_tray  a Pi app folder for a kind
    jisaku bundle verify snow_gauge-1.4.0.bundle --key bundle-signing.pub
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import load_settings


def cmd_keygen(args: argparse.Namespace) -> None:
    from jisaku.gateway.bundle_signing import make_keys

    keys = make_keys(load_settings().data_dir)
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
    kind, runs_on = kind_of(folder, args.target)
    runs_on = args.runs_on or runs_on
    out = Path(args.out) if args.out else Path(f"{kind}-{args.version}.bundle")
    manifest = build_bundle(folder, args.version, kind, runs_on, load_private_key(load_settings().data_dir), out)
    print(f"{out}: {kind} {manifest.version} for {runs_on}s, {len(manifest.files)} files,"
          f" {manifest.files_bytes:,} bytes, signed with key {manifest.key_id}")


def cmd_verify(args: argparse.Namespace) -> None:
    from jisaku.contract.bundles import BundleRefused, public_key_from_text, verify_bundle

    try:
        manifest = verify_bundle(Path(args.bundle), public_key_from_text(Path(args.key).read_text()))
    except BundleRefused as refused:
        raise SystemExit(f"jisaku bundle verify: REFUSED ({refused.reason}): {refused}") from None
    print(f"{args.bundle}: good. {manifest.kind} {manifest.version} for {manifest.runs_on}s,"
          f" {len(manifest.files)} files, signed with key {manifest.key_id}")
    for entry in manifest.files:
        print(f"  {entry.size:>9,}  {entry.path}")


def add_parser(commands) -> None:
    bundle = commands.add_parser("bundle", help="signed update bundles for devices (docs/updates.md)")
    sub = bundle.add_subparsers(dest="bundle_command", required=True)
    keygen = sub.add_parser("keygen", help="make the town's signing key in the data folder (once)")
    keygen.set_defaults(run=cmd_keygen)
    build = sub.add_parser("build", help="a signed bundle of a kind's board/ folder or a Pi app folder")
    build.add_argument("folder")
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
