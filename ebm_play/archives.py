"""Image files a person brings, as a zip or a folder, listed and read safely.

Everything is checked on the listing before a byte is decompressed or decoded: the number of
entries, each member's declared size and compression ratio (zip bombs), the total size, unsafe
names (absolute paths, ``..``), links, encrypted members, nested archives and files that are not
images. Members are read into memory one at a time, never extracted, so nothing is written
anywhere; a member is read up to its declared size and no further. Each refusal is one
:class:`~ebm_play.errors.EBMError` line that names the member.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import EBMError

MB = 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip", ".npz", ".jar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar")
# Signatures of archive formats at the start of a file (tar's sits at offset 257).
ARCHIVE_MAGIC = ((0, b"PK\x03\x04"), (0, b"PK\x05\x06"), (0, b"\x1f\x8b"), (0, b"BZh"), (0, b"\xfd7zXZ\x00"),
                 (0, b"7z\xbc\xaf\x27\x1c"), (0, b"Rar!\x1a\x07"), (0, b"\x28\xb5\x2f\xfd"), (257, b"ustar"))
JUNK = ("__MACOSX", "Thumbs.db", "desktop.ini")  # with names starting with '.': skipped, not refused
RATIO_FROM = 1 * MB  # the compression-ratio check applies to members at least this large


@dataclass(frozen=True)
class Limits:
    """What an upload (or a folder) may hold. The defaults suit a public app; ``CLI_LIMITS`` a person's
    own machine."""

    max_file_bytes: int = 50 * MB  # the archive itself
    max_total_bytes: int = 200 * MB  # all members uncompressed, or all files of a folder
    max_member_bytes: int = 10 * MB  # one picture file
    max_entries: int = 25_000  # entries in an archive / files in a folder, skipped ones included
    max_images: int = 20_000
    max_pixels: int = 16_000_000  # one picture, width × height, checked before it is decoded
    max_ratio: float = 100.0  # uncompressed / compressed size of a member (zip-bomb guard)
    max_classes: int = 100


UPLOAD_LIMITS = Limits()
CLI_LIMITS = Limits(max_file_bytes=4096 * MB, max_total_bytes=8192 * MB, max_member_bytes=64 * MB,
                    max_entries=1_000_000, max_images=500_000, max_pixels=25_000_000, max_classes=10_000)


def is_junk(parts: tuple[str, ...]) -> bool:
    """Files that archivers and file managers add (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``)."""
    return any(p.startswith(".") or p in JUNK for p in parts)


def check_not_archive(name: str, data: bytes) -> None:
    """Refuse a nested archive, whatever its name says."""
    if Path(name).suffix.lower() in ARCHIVE_SUFFIXES or any(data[o: o + len(m)] == m for o, m in ARCHIVE_MAGIC):
        raise EBMError(f"{name}: an archive inside the archive; nested archives are not opened")


def _check_name(name: str, parts: tuple[str, ...]) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in ARCHIVE_SUFFIXES:
        raise EBMError(f"{name}: an archive inside the archive; nested archives are not opened")
    if suffix not in IMAGE_SUFFIXES:
        raise EBMError(f"{name}: not an image (expected {', '.join(s[1:] for s in IMAGE_SUFFIXES)})")


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n:,} bytes"


class ImageFiles:
    """The pictures of a zip file or a folder: ``paths`` (components under the root, sorted), and
    :meth:`read` for one picture's bytes. Use as a context manager (a zip stays open)."""

    def __init__(self, path: str | os.PathLike, limits: Limits = UPLOAD_LIMITS):
        self.path, self.limits = Path(path), limits
        self.skipped: list[str] = []  # junk entries (hidden files, __MACOSX …)
        self._zip: zipfile.ZipFile | None = None
        self._entries: list = []  # ZipInfo or Path, parallel to paths
        if self.path.is_dir():
            self._list_folder()
        else:
            self._list_zip()
        order = sorted(range(len(self.paths)), key=lambda i: self.paths[i])
        self.paths = [self.paths[i] for i in order]
        self._entries = [self._entries[i] for i in order]
        if len(self.paths) > limits.max_images:
            raise EBMError(f"{self.path.name}: {len(self.paths):,} images, over the limit of {limits.max_images:,}")

    def __enter__(self) -> ImageFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    # --- listing ------------------------------------------------------------------------------
    def _list_zip(self) -> None:
        lim, name = self.limits, self.path.name
        size = self.path.stat().st_size
        if size > lim.max_file_bytes:
            raise EBMError(f"{name}: {_size(size)}, over the {_size(lim.max_file_bytes)} upload limit")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
            raise EBMError(f"{name}: not a readable zip file ({e})") from e
        if len(infos) > lim.max_entries:
            raise EBMError(f"{name}: {len(infos):,} entries, over the limit of {lim.max_entries:,}")
        self.paths, seen, total = [], set(), 0
        for info in infos:
            member = info.filename
            if member.endswith("/"):
                continue
            parts = self._safe_parts(member)
            if is_junk(parts):
                self.skipped.append(member)
                continue
            if (info.external_attr >> 16) & 0o170000 == stat.S_IFLNK:
                raise EBMError(f"{member}: a symbolic link; links are not followed")
            if info.flag_bits & 0x1:
                raise EBMError(f"{member}: encrypted; upload an archive without a password")
            if parts in seen:
                raise EBMError(f"{member}: appears twice in the archive")
            seen.add(parts)
            _check_name(member, parts)
            if info.file_size > lim.max_member_bytes:
                raise EBMError(f"{member}: {_size(info.file_size)} uncompressed, over the {_size(lim.max_member_bytes)} limit per image")
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= RATIO_FROM and ratio > lim.max_ratio:
                raise EBMError(f"{member}: compressed {ratio:,.0f}:1, over the {lim.max_ratio:g}:1 limit (zip bomb guard)")
            total += info.file_size
            if total > lim.max_total_bytes:
                raise EBMError(f"{name}: over {_size(lim.max_total_bytes)} uncompressed in all (zip bomb guard)")
            self.paths.append(parts)
            self._entries.append(info)

    def _safe_parts(self, member: str) -> tuple[str, ...]:
        if "\\" in member or member.startswith("/") or (len(member) > 1 and member[1] == ":") or "\x00" in member:
            raise EBMError(f"{member}: an absolute or unusual path in the archive; refused")
        parts = tuple(p for p in member.split("/") if p not in ("", "."))
        if ".." in parts:
            raise EBMError(f"{member}: a path that climbs out of the archive ('..'); refused")
        return parts

    def _list_folder(self) -> None:
        lim, root = self.limits, self.path
        self.paths, count, total = [], 0, 0
        for top, dirs, files in os.walk(root):  # links to folders are not followed
            dirs.sort()
            here = Path(top).relative_to(root).parts
            for f in sorted(files):
                count += 1
                if count > lim.max_entries:
                    raise EBMError(f"{root.name}: over {lim.max_entries:,} files, the limit")
                parts = (*here, f)
                if is_junk(parts):
                    self.skipped.append("/".join(parts))
                    continue
                p = Path(top) / f
                _check_name("/".join(parts), parts)
                st = p.stat()
                if not stat.S_ISREG(st.st_mode):
                    raise EBMError(f"{'/'.join(parts)}: not a regular file")
                if st.st_size > lim.max_member_bytes:
                    raise EBMError(f"{'/'.join(parts)}: {_size(st.st_size)}, over the {_size(lim.max_member_bytes)} limit per image")
                total += st.st_size
                if total > lim.max_total_bytes:
                    raise EBMError(f"{root.name}: over {_size(lim.max_total_bytes)} of images in all")
                self.paths.append(parts)
                self._entries.append(p)

    # --- reading ------------------------------------------------------------------------------
    def read(self, i: int) -> bytes:
        """The bytes of picture ``i``: at most its declared size (a zip member that holds more, or
        fails its checksum, is refused)."""
        entry, name = self._entries[i], "/".join(self.paths[i])
        if self._zip is None:
            data = entry.read_bytes()
            if len(data) > self.limits.max_member_bytes:  # grew since it was listed
                raise EBMError(f"{name}: over the {_size(self.limits.max_member_bytes)} limit per image")
        else:
            try:
                with self._zip.open(entry) as f:
                    data = f.read(entry.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                raise EBMError(f"{name}: cannot be read from the archive ({e})") from e
            if len(data) != entry.file_size:
                raise EBMError(f"{name}: its size does not match the archive's listing; refused")
        check_not_archive(name, data)
        return data
