"""Writing artifacts safely and describing where they came from.

Every file SampleSift writes goes to a temporary name in the destination folder and is then
renamed into place, so a reader sees either the old file or the complete new one, never half
of either, even if the writer is killed midway. Folders (a trained autoencoder, an export)
are built the same way: in a hidden temporary sibling, renamed when complete.

Fingerprints are short content hashes (BLAKE2b) used to tie artifacts to the data, weights
and embeddings they were computed from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import SampleSiftError

FINGERPRINT_CHARS = 32


def _process_umask() -> int:
    # mkstemp creates files readable by their owner only; artifacts get the permissions an
    # ordinary open() would give them, so a workspace shared by a team stays readable.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
    """A binary handle on a temporary file beside ``path``, renamed to it once written and synced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    with _atomic_file(path) as handle:
        handle.write(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert NumPy scalars/arrays, paths and tuples into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text every artifact is written in (see :func:`atomic_write_json`)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json_text(obj))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or corrupt file into a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SampleSiftError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleSiftError(f"{what} {path} is not valid JSON ({exc}); delete it and recreate it") from None


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save one array in ``.npy`` format atomically (streamed: no copy of it in memory)."""
    path = Path(path)
    with _atomic_file(path) as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    return path


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Save arrays in one uncompressed ``.npz`` archive atomically."""
    path = Path(path)
    with _atomic_file(path) as handle:
        np.savez(handle, **arrays)
    return path


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a folder under a temporary name; rename it to ``final`` when the block succeeds.

    If the block raises, the temporary folder is removed and ``final`` is untouched. With
    ``replace=False`` an existing ``final`` is an error; with ``replace=True`` it is swapped
    out (the old folder is moved aside, the new one renamed in, the old one deleted).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise SampleSiftError(f"{final} already exists")
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        _swap_into_place(tmp, final, replace)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the finished folder ``tmp`` to ``final``, moving an existing one aside first.

    Two processes may finish the same folder at once (two runs decoding the same data set
    into the cache): a rename onto a non-empty folder then fails with ENOTEMPTY/EEXIST, and
    so does moving aside a folder the other process just moved. Each such collision means
    another writer got in between, so the swap is simply tried again.
    """
    moved_aside: list[Path] = []
    try:
        for _ in range(100):
            try:
                if final.exists():
                    if not replace:
                        raise SampleSiftError(f"{final} already exists")
                    trash = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.old"
                    os.replace(final, trash)
                    moved_aside.append(trash)
                os.replace(tmp, final)
                return
            except FileNotFoundError:
                continue  # the other writer moved ``final`` aside between our check and our rename
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        raise SampleSiftError(f"could not move {tmp.name} into place as {final}: other processes kept replacing it")
    finally:
        for trash in moved_aside:
            shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy_message: str, *, wait_s: float = 2.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block.

    The kernel releases the lock when its holder exits for any reason, ``kill -9``
    included, so a lock never outlives its process. When another process holds it, retry
    for ``wait_s`` seconds (a reader may be probing it with :func:`lock_is_held`), then
    raise :class:`SampleSiftError` with ``busy_message``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SampleSiftError(busy_message) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_is_held(path: str | Path) -> bool:
    """True while some process holds :func:`exclusive_lock` on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (``pid <= 0`` never does)."""
    if pid <= 0:  # never signal a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def utc_now() -> str:
    """The current time in UTC as ISO 8601 to the second, as artifacts record it (``2025-01-31T12:00:00+00:00``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def remove_temporaries(folder: str | Path) -> list[str]:
    """Delete the temporary files a killed writer left in ``folder``; returns their names.

    Only call this while holding the lock that keeps other writers out of ``folder``:
    a live writer's temporary file looks exactly the same.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
    return removed


def fingerprint_bytes(*chunks: bytes | str) -> str:
    """A short hex BLAKE2b digest of the given chunks (strings are UTF-8 encoded)."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_CHARS // 2)
    for chunk in chunks:
        data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Fingerprint arrays by dtype, shape and content."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_CHARS // 2)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if array.size:  # an empty array (an empty test split) is all dtype and shape; memoryview refuses it
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def fingerprint_npy_files(*paths: str | Path, block: int = 1 << 24) -> str:
    """:func:`fingerprint_arrays` of the arrays saved in ``.npy`` files, read from disk in blocks.

    The same fingerprint as loading them, without mapping or holding them: a decoded cache of
    a million images is fingerprinted in a few megabytes of memory.
    """
    digest = hashlib.blake2b(digest_size=FINGERPRINT_CHARS // 2)
    for path in paths:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            if fortran_order:  # C-ordered bytes are what fingerprint_arrays hashes
                return fingerprint_arrays(*(np.load(p, allow_pickle=False) for p in paths))
            digest.update(f"{dtype.str}{shape}".encode())
            while chunk := handle.read(block):
                digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python, the toolkit and the libraries that decide numerical results."""
    import sklearn
    import torch
    import torchvision

    from toolkit import __version__

    return {
        "toolkit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def confined_path(root: str | Path, *parts: str) -> Path:
    """Join ``parts`` under ``root`` and refuse any result that escapes it.

    Both ``..`` components and symbolic links are resolved before the check, so neither can
    be used to write outside ``root``.
    """
    root = Path(root).resolve()
    candidate = root.joinpath(*parts).resolve()
    if candidate != root and root not in candidate.parents:
        raise SampleSiftError(
            f"path {Path(*parts)} resolves to {candidate}, outside {root}; use a plain name inside it"
        )
    return candidate


def safe_name(name: str, what: str = "name") -> str:
    """Check that ``name`` is usable as a single file or folder name."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=")
    if not name or name in {".", ".."} or not set(name) <= allowed or name.startswith("."):
        raise SampleSiftError(
            f"{what} {name!r} is not allowed; use letters, digits and . _ - + = (not starting with '.')"
        )
    return name
