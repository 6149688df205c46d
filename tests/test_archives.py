"""Hostile uploads: each is refused with one line that names the problem, before anything is
decompressed or decoded where the listing already tells, and without extracting anything."""

from __future__ import annotations

import io
import os
import resource
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from owndata import glyphs, make_folder, make_zip, png
from PIL import Image

from ebm_play.archives import ImageFiles, Limits
from ebm_play.data import load_dataset
from ebm_play.errors import EBMError

GOOD = png(glyphs(1)["ring"][0])


def zip_of(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def refused(path, *words, limits: Limits = Limits(), **kw) -> str:
    with pytest.raises(EBMError) as e:
        load_dataset(path, limits, **kw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_zip_bomb_by_compression_ratio(tmp_path):
    # 5 MB of zeros deflate to ~5 kB: a ratio of ~1000:1, far past 100:1
    refused(zip_of(tmp_path / "b.zip", {"a.png": bytes(5 * 2**20)}), "a.png", "zip bomb guard")


def test_zip_bomb_by_total_size(tmp_path):
    noise = np.random.default_rng(0).bytes(300_000)  # incompressible: no single member looks like a bomb
    members = {f"{i}.png": noise for i in range(4)}
    refused(zip_of(tmp_path / "t.zip", members), "uncompressed in all", limits=Limits(max_total_bytes=1_000_000))


def test_member_over_the_size_limit(tmp_path):
    refused(zip_of(tmp_path / "m.zip", {"big.png": bytes(11 * 2**20)}), "big.png", "limit per image")


def test_upload_over_the_file_limit(tmp_path):
    refused(make_zip(tmp_path / "u.zip"), "upload limit", limits=Limits(max_file_bytes=1000))


def test_too_many_entries(tmp_path):
    refused(zip_of(tmp_path / "e.zip", {f"{i}.png": GOOD for i in range(6)}), "6 entries", limits=Limits(max_entries=5))


def test_too_many_images(tmp_path):
    refused(zip_of(tmp_path / "n.zip", {f"{i}.png": GOOD for i in range(6)}), "6 images", limits=Limits(max_images=5))


def test_nested_archive_by_name(tmp_path):
    inner = zip_of(tmp_path / "inner.zip", {"a.png": GOOD}).read_bytes()
    refused(zip_of(tmp_path / "o.zip", {"a.png": GOOD, "more/inner.zip": inner}), "more/inner.zip", "nested")


def test_nested_archive_named_like_a_picture(tmp_path):
    inner = zip_of(tmp_path / "inner.zip", {"a.png": GOOD}).read_bytes()
    refused(zip_of(tmp_path / "o.zip", {"a.png": GOOD, "b.png": inner}), "b.png", "nested")


@pytest.mark.parametrize("name, words", [("../evil.png", "climbs out"), ("a/../../evil.png", "climbs out"),
                                         ("/etc/evil.png", "absolute"), ("C:/evil.png", "absolute"),
                                         ("a\\..\\evil.png", "absolute")])
def test_path_traversal(tmp_path, name, words):
    refused(zip_of(tmp_path / "p.zip", {"a.png": GOOD, name: GOOD}), words)
    assert not (tmp_path.parent / "evil.png").exists()


def test_symbolic_link_member(tmp_path):
    p = tmp_path / "l.zip"
    with zipfile.ZipFile(p, "w") as z:
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    refused(p, "link.png", "symbolic link")


def test_encrypted_member(tmp_path):
    p = tmp_path / "c.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.png", GOOD)
    raw = bytearray(p.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set bit 0 of the flags in both headers
        at = raw.index(sig)
        raw[at + offset] |= 1
    p.write_bytes(bytes(raw))
    refused(p, "a.png", "encrypted")


def test_non_image_member(tmp_path):
    refused(zip_of(tmp_path / "t.zip", {"a.png": GOOD, "notes.txt": b"hello"}), "notes.txt", "not an image")


def test_text_named_like_a_picture(tmp_path):
    refused(zip_of(tmp_path / "t.zip", {"a.png": GOOD, "b.png": b"hello, not a picture"}), "b.png", "not an image file")


def test_picture_of_one_colour(tmp_path):
    grey = png(Image.new("L", (40, 40), 128))
    refused(zip_of(tmp_path / "g.zip", {"a.png": GOOD, "grey.png": grey}), "grey.png", "one colour")


def test_pixel_bomb(tmp_path):
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")  # 36 megapixels in a few kB
    refused(zip_of(tmp_path / "p.zip", {"bomb.png": buf.getvalue()}), "bomb.png", "6000×6000", "over the limit")


def test_duplicate_member(tmp_path):
    p = tmp_path / "d.zip"
    with zipfile.ZipFile(p, "w") as z, pytest.warns(UserWarning):
        z.writestr("a.png", GOOD)
        z.writestr("a.png", GOOD)
    refused(p, "a.png", "twice")


def test_corrupt_member(tmp_path):
    p = zip_of(tmp_path / "c.zip", {"a.png": GOOD}, zipfile.ZIP_STORED)
    raw = bytearray(p.read_bytes())
    raw[raw.index(GOOD[:16]) + 100] ^= 0xFF  # one flipped byte inside the stored member: a CRC mismatch
    p.write_bytes(bytes(raw))
    refused(p, "a.png", "cannot be read")


def test_not_a_zip(tmp_path):
    (tmp_path / "n.zip").write_bytes(b"PK\x03\x04 truncated")
    refused(tmp_path / "n.zip", "not a readable zip")


def test_empty_zip(tmp_path):
    refused(zip_of(tmp_path / "e.zip", {"__MACOSX/._a.png": b"junk"}), "no pictures")


def test_loose_picture_with_labels_from_folders(tmp_path):
    refused(make_zip(tmp_path / "z.zip", top="g", extra={"g/loose.png": GOOD}), "g/loose.png", "class folder",
            labels_from_folders=True)


def test_folder_special_file_and_link_to_folder(tmp_path):
    root = make_folder(tmp_path / "g")
    os.symlink(tmp_path, root / "ring" / "outside")  # a link to a folder is not followed
    with ImageFiles(root) as files:
        assert len(files.paths) == 18 and all("outside" not in p for p in files.paths)
    os.mkfifo(root / "ring" / "pipe.png")  # reading it would block forever
    refused(root, "pipe.png", "not a regular file")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_memory_stays_flat_over_hostile_uploads(tmp_path):
    """Ten hostile uploads in a row (bombs of each kind): resident memory grows by less than 100 MB."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.uint8))
    header["shape"] = (10**9, 28, 28)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    uploads = [zip_of(tmp_path / "ratio.zip", {"a.png": bytes(9 * 2**20)}),
               zip_of(tmp_path / "pixels.zip", {"bomb.png": buf.getvalue()}),
               zip_of(tmp_path / "bomb.npz", {"x.npy": npy.getvalue()}),
               zip_of(tmp_path / "nested.zip", {"a.png": GOOD, "b.png": (tmp_path / "ratio.zip").read_bytes()}),
               zip_of(tmp_path / "big.zip", {"big.png": bytes(50 * 2**20)})]
    load_dataset(make_zip(tmp_path / "ok.zip"))  # warm up: imports, allocator pools
    before = _rss_mb()
    for i in range(10):
        with pytest.raises(EBMError):
            load_dataset(uploads[i % len(uploads)])
    assert _rss_mb() - before < 100
