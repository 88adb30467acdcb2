"""The picture outbox: pictures wait on disk until the server has them, through reboots,
bounded by bytes with the oldest dropped first and counted."""

from __future__ import annotations

import time

from jisaku.device.picture_outbox import PictureOutbox

KB = 1000


def picture(n: int, size: int = 10 * KB) -> bytes:
    """A stand-in picture of ``size`` bytes that says which one it is."""
    return f"picture {n}|".encode().ljust(size, b".")


def test_pictures_wait_oldest_first_and_are_forgotten_once_removed(tmp_path):
    outbox = PictureOutbox(tmp_path / "pictures", max_bytes=1_000 * KB)
    seqs = [outbox.put(picture(n), "image/jpeg", ts=1732300000.0 + n) for n in range(3)]
    assert seqs == [1, 2, 3]
    assert [p.seq for p in outbox] == [1, 2, 3]
    oldest = outbox.oldest()
    assert oldest.read() == picture(0) and oldest.ts == 1732300000.0 and oldest.content_type == "image/jpeg"
    outbox.remove(oldest.seq)
    assert outbox.oldest().seq == 2 and len(outbox) == 2
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["2.jpg", "2.json", "3.jpg", "3.json", "seq.json"]


def test_a_full_outbox_drops_the_oldest_first_and_counts_them(tmp_path):
    outbox = PictureOutbox(tmp_path / "pictures", max_bytes=35 * KB)
    for n in range(6):
        outbox.put(picture(n), "image/jpeg", ts=1732300000.0 + n)
    assert [p.read() for p in outbox] == [picture(3), picture(4), picture(5)], "the newest three fit in 35 kB"
    assert outbox.size_bytes <= 35 * KB
    assert outbox.dropped == 3
    again = PictureOutbox(tmp_path / "pictures", max_bytes=35 * KB)
    assert again.dropped == 3, "the loss is remembered across a restart, to be reported"


def test_seq_survives_a_restart_and_is_never_reused(tmp_path):
    outbox = PictureOutbox(tmp_path / "pictures", max_bytes=1_000 * KB)
    outbox.put(picture(1), "image/jpeg", ts=1.0)
    outbox.put(picture(2), "image/png", ts=2.0)
    outbox.remove(1)
    outbox.remove(2)          # everything sent: the folder holds no picture to count from
    outbox.count_refused()

    after_reboot = PictureOutbox(tmp_path / "pictures", max_bytes=1_000 * KB)
    assert after_reboot.oldest() is None
    assert after_reboot.put(picture(3), "image/jpeg", ts=3.0) == 3, "numbering carries on after a reboot"
    assert after_reboot.refused == 1


def test_what_was_left_waits_after_a_restart_and_a_half_written_file_is_ignored(tmp_path):
    folder = tmp_path / "pictures"
    outbox = PictureOutbox(folder, max_bytes=1_000 * KB)
    outbox.put(picture(1), "image/jpeg", ts=1.0)
    outbox.put(picture(2), "image/png", ts=None)     # no clock: its age is known until the device reboots
    assert list(outbox)[1].ts is None and list(outbox)[1].age_s() >= 0
    # The power went while the next picture was being written: only its temp file is there,
    # and the one before that got its picture file but not its note.
    (folder / "4.jpg.tmp").write_bytes(b"\xff\xd8 half a pict")
    (folder / "3.jpg").write_bytes(picture(3))

    after_reboot = PictureOutbox(folder, max_bytes=1_000 * KB)
    assert [(p.seq, p.content_type, p.read()) for p in after_reboot] == [
        (1, "image/jpeg", picture(1)), (2, "image/png", picture(2))]
    assert not list(folder.glob("*.tmp")) and not (folder / "3.jpg").exists()
    assert after_reboot.put(picture(5), "image/jpeg", ts=5.0) == 3
    time.sleep(0.01)
    assert list(after_reboot)[1].age_s() > 0, "the same boot: the monotonic age still holds"
