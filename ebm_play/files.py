"""Output files: checked before the work that fills them, written atomically, never over a non-file.

A run that ends by writing a file should learn at its start, not after an hour of training, that
the file cannot be written. The write itself goes to a temporary file in the same folder, which is
then renamed over the target: a crash mid-write leaves any previous file intact, and a device node
or folder at the target is refused rather than replaced by a regular file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import EBMError


def _not_regular(path: Path) -> str | None:
    """What ``path`` is, if it exists and is not a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...], what: str = "output") -> Path:
    """Refuse an output path before any work: a type not in ``suffixes``, a folder, an existing
    path that is not a regular file (``/dev/full``), or a folder that cannot be written (a write
    and removal of a temporary file there is the test; a missing folder's nearest existing one must
    be writable, since the folder is created on the way)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        raise EBMError(f"{what} {str(p)!r}: unknown type {suffix or '(no extension)'}; write {' or '.join(suffixes)}")
    kind = _not_regular(p)
    if kind:
        raise EBMError(f"{what} {str(p)!r} is {kind}; it will not be replaced")
    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise EBMError(f"{what} {str(p)!r}: {str(folder)!r} is not a folder")
    if folder != p.parent:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise EBMError(f"{what} {str(p)!r}: cannot create its folder in {str(folder)!r} (permission denied)")
        return p
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{p.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EBMError(f"{what} {str(p)!r}: cannot write in {str(folder)!r} ({e.strerror or e})") from e
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], mode: int = 0o644) -> Path:
    """Call ``write(temporary_path)``, then rename the result over ``path``. The temporary file
    is in the same folder (a rename within one file system is atomic) and is removed on any
    failure, Ctrl-C included; a target that is not a regular file is refused, never replaced."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        kind = _not_regular(p)
        if kind:
            raise EBMError(f"{str(p)!r} is {kind}; it was not replaced")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
