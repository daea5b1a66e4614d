"""Atomic file and folder writes: either the whole new file (folder) is there, or the old one (or nothing) is."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); Windows cannot open a folder and NTFS journals it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporaries_of(path: Path) -> list[Path]:
    """The temporary files and folders that :func:`atomic_write_bytes` and :func:`staged_folder` make
    beside ``path`` (``.NAME.*.tmp``): another process's write in progress, or what a killed one left."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, durable: bool = True, mode: int | None = None
) -> None:
    """Write to a temporary file beside ``path``, fsync, rename over ``path`` (and fsync the folder).

    On any failure (a full disk included) the temporary file is removed and the error re-raised.
    The file gets the usual mode for the user's umask (mkstemp alone would make it private).
    ``durable=False`` skips the fsyncs, for files that are cheap to lose (logs, caches). ``mode=0o600``
    keeps a secret private from the first byte (mkstemp creates the file 0600; it is never widened).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path``: os.write (a full disk) names no file, mkstemp names the temporary one."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return OSError(exc.errno, exc.strerror, os.fspath(path))  # the errno picks the subclass (ENOSPC, EACCES...)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def folder_in_use(out: Path) -> bool:
    """True when ``out`` cannot take a new folder: it is a file, or a folder with something in it."""
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``out``; rename it to ``out`` when the block ends
    without an error, else remove it. ``out`` must be absent or an empty folder (callers check
    :func:`folder_in_use` first, with their own message). The folder gets mode 0o777 and its files
    0o666, less the umask, like any folder the user makes (mkdtemp alone would make it private)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        umask = _umask()
        tmp.chmod(0o777 & ~umask)
        for path in tmp.iterdir():  # a subfolder keeps its x bits (0o666 made it unenterable)
            path.chmod((0o777 if path.is_dir() and not path.is_symlink() else 0o666) & ~umask)
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
