"""Signed update bundles: one made by `jisaku bundle build` verifies; a changed one is refused.

Real keys, real files: the printer tray's board/ folder, as an operator would bundle it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jisaku.cli import main
from jisaku.contract.bundles import (MAGIC, BundleRefused, parse_manifest, public_key_from_text, read_header,
                                     unpack_bundle, verify_bundle)
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys

REPO = Path(__file__).resolve().parent.parent
BOARD = REPO / "kinds" / "printer_tray" / "board"


@pytest.fixture
def town_dir(tmp_path, monkeypatch):
    """A server's data folder with the town's key, as `jisaku bundle keygen` makes it."""
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "jisaku.toml"))
    monkeypatch.chdir(tmp_path)
    main(["bundle", "keygen"])
    return tmp_path


def public_key(town_dir: Path) -> bytes:
    return public_key_from_text((town_dir / "data" / "keys" / "bundle-signing.pub").read_text())


def test_keygen_keeps_the_private_key_owner_only_and_never_prints_it(town_dir, capsys, monkeypatch):
    monkeypatch.setenv("JISAKU_DATA", str(town_dir / "new-town"))
    main(["bundle", "keygen"])
    private = town_dir / "new-town" / "keys" / "bundle-signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    out = capsys.readouterr().out
    assert "PRIVATE KEY" not in out and private.read_text().splitlines()[1] not in out
    assert (town_dir / "new-town" / "keys" / "bundle-signing.pub").read_text().strip() in out
    with pytest.raises(SystemExit, match="exists: devices already trust it"):
        main(["bundle", "keygen"])  # a second key would lock every device out


def test_a_built_bundle_verifies_and_unpacks_to_the_same_files(town_dir, capsys):
    main(["bundle", "build", str(BOARD), "--version", "1.4.0"])
    bundle = town_dir / "printer_tray-1.4.0.bundle"
    assert "printer_tray 1.4.0 for boards" in capsys.readouterr().out
    main(["bundle", "verify", str(bundle), "--key", str(town_dir / "data" / "keys" / "bundle-signing.pub")])
    assert "good" in capsys.readouterr().out
    manifest = verify_bundle(bundle, public_key(town_dir))
    assert (manifest.kind, manifest.runs_on, manifest.version) == ("printer_tray", "board", "1.4.0")
    assert {f.path for f in manifest.files} == {"README.ja.md", "README.md", "config.example.json", "main.py",
                                                "tray.py"}
    unpack_bundle(bundle, manifest, town_dir / "unpacked")
    for entry in manifest.files:
        assert (town_dir / "unpacked" / entry.path).read_bytes() == (BOARD / entry.path).read_bytes()


def test_one_changed_byte_in_a_file_is_refused_by_its_hash(town_dir, capsys):
    main(["bundle", "build", str(BOARD), "--version", "1.4.0", "--out", "b.bundle"])
    data = bytearray((town_dir / "b.bundle").read_bytes())
    data[-10] ^= 0x01  # inside the last file, after the signed manifest
    (town_dir / "b.bundle").write_bytes(bytes(data))
    with pytest.raises(BundleRefused, match="do not match the hash in the signed manifest") as refused:
        verify_bundle(town_dir / "b.bundle", public_key(town_dir))
    assert refused.value.reason == "hash"
    with pytest.raises(SystemExit, match=r"REFUSED \(hash\)"):
        main(["bundle", "verify", "b.bundle", "--key", "data/keys/bundle-signing.pub"])


def test_a_changed_manifest_or_another_key_is_refused_by_the_signature(town_dir, tmp_path):
    main(["bundle", "build", str(BOARD), "--version", "1.4.0", "--out", "b.bundle"])
    original = (town_dir / "b.bundle").read_bytes()
    # Someone edits the version in the manifest (same length, so the file still parses).
    (town_dir / "b.bundle").write_bytes(original.replace(b'"version":"1.4.0"', b'"version":"1.4.9"', 1))
    with pytest.raises(BundleRefused, match="signature does not match the town's public key"):
        verify_bundle(town_dir / "b.bundle", public_key(town_dir))
    # Signed by another town's key: the device says which key it trusts.
    other = make_keys(tmp_path / "other-town")
    build_bundle(BOARD, "1.4.0", "printer_tray", "board", load_private_key(tmp_path / "other-town"),
                 town_dir / "other.bundle")
    with pytest.raises(BundleRefused, match=f"signed with key {other.key_id}, but this device trusts key"):
        verify_bundle(town_dir / "other.bundle", public_key(town_dir))


@pytest.mark.parametrize("path", ["../evil.py", "/etc/cron.d/evil", "lib/../../evil.py", "C:\\evil.py",
                                  "lib\\..\\evil.py", ".ssh/authorized_keys", "", "a//b"])
def test_a_path_that_escapes_the_folder_is_refused(path):
    manifest = ('{"format":1,"kind":"printer_tray","runs_on":"board","version":"1","made":0,"key_id":"x",'
                '"files":[{"path":%s,"size":0,"sha256":"%s"}]}' % (repr(path).replace("'", '"').replace("\\\\", "\\\\"),
                                                                  "0" * 64))
    with pytest.raises(BundleRefused, match="could write outside the folder") as refused:
        parse_manifest(manifest.encode())
    assert refused.value.reason == "path"


def test_a_signed_bundle_with_an_escaping_path_is_refused_before_anything_is_written(town_dir, tmp_path):
    # The town's own key signs a hand-made manifest: the path check does not rely on the signer.
    from jisaku.contract.bundles import BundleFile, Manifest, key_id, manifest_bytes
    key = load_private_key(town_dir / "data")
    bad = Manifest("printer_tray", "board", "1", 0.0, key_id(public_key(town_dir)),
                   (BundleFile("../evil.py", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),))
    signed = manifest_bytes(bad)
    bundle = tmp_path / "evil.bundle"
    bundle.write_bytes(MAGIC + key.sign(signed).hex().encode() + b"\n" + str(len(signed)).encode() + b"\n" + signed)
    with pytest.raises(BundleRefused, match="'../evil.py' could write outside"):
        verify_bundle(bundle, public_key(town_dir))
    assert not (tmp_path / "evil.py").exists()


def test_a_bundle_too_large_or_cut_short_is_refused(town_dir, tmp_path):
    with pytest.raises(BundleRefused, match="more than the 1,000 a bundle may hold") as refused:
        build_bundle(BOARD, "1", "printer_tray", "board", load_private_key(town_dir / "data"),
                     tmp_path / "big.bundle", max_bytes=1000)
    assert refused.value.reason == "size"
    main(["bundle", "build", str(BOARD), "--version", "1.4.0", "--out", "b.bundle"])
    bundle = town_dir / "b.bundle"
    with pytest.raises(BundleRefused, match="more than the 100 allowed"):
        verify_bundle(bundle, public_key(town_dir), max_bytes=100)
    data = bundle.read_bytes()
    bundle.write_bytes(data[:-5])  # a download that stopped early
    with pytest.raises(BundleRefused, match="the download is incomplete"):
        verify_bundle(bundle, public_key(town_dir))


def test_the_header_says_where_every_file_starts(town_dir):
    """What lets a board fetch one file at a time: offsets follow from the manifest alone."""
    main(["bundle", "build", str(BOARD), "--version", "2", "--out", "b.bundle"])
    data = (town_dir / "b.bundle").read_bytes()
    with open(town_dir / "b.bundle", "rb") as stream:
        header = read_header(stream)
    offset = header.files_offset
    for entry in header.manifest.files:
        assert data[offset:offset + entry.size] == (BOARD / entry.path).read_bytes()
        offset += entry.size
    assert offset == len(data) == header.total_bytes


def test_build_leaves_out_caches_and_hidden_files_and_refuses_links_outside(town_dir, tmp_path):
    app = tmp_path / "app"
    (app / "__pycache__").mkdir(parents=True)
    (app / "pi.py").write_text("print('hello')\n")
    (app / "__pycache__" / "pi.cpython-311.pyc").write_bytes(b"\0")
    (app / ".env").write_text("SECRET=1\n")
    main(["bundle", "build", str(app), "--version", "3", "--target", "printer_tray", "--out", "app.bundle"])
    manifest = verify_bundle(town_dir / "app.bundle", public_key(town_dir))
    assert [f.path for f in manifest.files] == ["pi.py"] and manifest.runs_on == "pi"
    os.symlink(town_dir / "data" / "keys" / "bundle-signing.key", app / "key.pem")
    with pytest.raises(SystemExit, match="links outside"):
        main(["bundle", "build", str(app), "--version", "4", "--target", "printer_tray"])


def test_publish_from_the_command_line_keeps_it_beside_the_database_and_audits_it(town_dir, capsys, tmp_path):
    from jisaku.gateway.audit import AuditLog
    from jisaku.gateway.db import Database

    main(["bundle", "build", str(BOARD), "--version", "1.4.0"])
    main(["bundle", "publish", "printer_tray-1.4.0.bundle"])
    assert "printer_tray 1.4.0 is published" in capsys.readouterr().out
    stored = town_dir / "data" / "bundles" / "printer_tray" / "1.4.0.bundle"
    assert stored.read_bytes() == (town_dir / "printer_tray-1.4.0.bundle").read_bytes()
    main(["bundle", "list"])
    assert "printer_tray     1.4.0" in capsys.readouterr().out
    entry = AuditLog(Database(town_dir / "data" / "jisaku.db")).entries()[0]
    assert (entry["action"], entry["target"]) == ("bundle.publish", "printer_tray/1.4.0")
    assert entry["actor"].startswith("cli:")
    make_keys(tmp_path / "elsewhere")
    build_bundle(BOARD, "2", "printer_tray", "board", load_private_key(tmp_path / "elsewhere"), tmp_path / "x.bundle")
    with pytest.raises(SystemExit, match=r"REFUSED \(signature\)"):
        main(["bundle", "publish", str(tmp_path / "x.bundle")])


def test_the_signing_key_is_in_the_backup_and_comes_back_owner_only(town_dir, tmp_path):
    from jisaku.gateway.backup import make_backup, restore_backup

    main(["bundle", "build", str(BOARD), "--version", "1", "--out", "b.bundle"])
    main(["bundle", "publish", "b.bundle"])
    info = make_backup(town_dir / "data" / "jisaku.db", town_dir / "data", None, tmp_path / "backups")
    restore_backup(info.path, tmp_path / "new-box" / "data", None)
    restored = tmp_path / "new-box" / "data" / "keys" / "bundle-signing.key"
    assert restored.read_bytes() == (town_dir / "data" / "keys" / "bundle-signing.key").read_bytes()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    assert stat.S_IMODE(restored.parent.stat().st_mode) == 0o700
    assert (tmp_path / "new-box" / "data" / "bundles" / "printer_tray" / "1.bundle").is_file()
    # The restored key signs bundles that devices holding the old public key accept.
    build_bundle(BOARD, "2", "printer_tray", "board", load_private_key(tmp_path / "new-box" / "data"),
                 tmp_path / "after.bundle")
    assert verify_bundle(tmp_path / "after.bundle", public_key(town_dir)).version == "2"
