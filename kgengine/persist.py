"""Writing to disk so that a crash, a kill or a full disk never leaves a mix of two saves.

* :func:`atomic_write`: one file through a temporary file in the same folder,
  fsync'd, renamed into place, and the folder fsync'd.
* :func:`commit_folder`: a whole saved-model folder as one unit. Every file is
  first written beside its final name (``name.kge-new``) and fsync'd; then
  ``.save-pending.json`` (their sizes and hashes) is written atomically: that
  rename is the commit point. Afterwards each new file replaces the old one and
  ``manifest.json`` records the folder's files. A save killed before the commit
  point leaves the old model untouched (the stray new files are removed by the
  next save or load); one killed after it is rolled forward by the next save or
  load (:func:`recover_folder`). Either way a reader sees the old model or the
  new one, never a mix.
* :func:`verify_folder`: checks every file the manifest lists (size and SHA-256;
  for files over :data:`FULL_HASH_LIMIT`, of their first and last
  :data:`PARTIAL_HASH_BYTES`), so a truncated, swapped or edited file is refused
  by name.
* :func:`write_config` / :func:`read_config`: a JSON config written atomically with a
  ``format_version``, and read back refusing a version newer than this code reads;
  :func:`save_tensors`: a safetensors file written atomically. Every saved object
  (kgengine's and the bridge's) writes through these.
* :class:`SaveLock`: one run per save path. ``.kgengine.lock`` holds the owner's
  PID, host and start time under an exclusive ``flock``, which the OS releases
  when the owner dies (kill -9 included), so a lock left by a crash is taken over
  with a warning, while a live owner makes a second run fail at once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

from .errors import ModelFolderError, RunLockedError, SavePathError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "write_config", "read_config", "save_tensors",
           "commit_folder", "recover_folder", "verify_folder", "SaveLock", "LOCK_NAME", "MANIFEST_NAME",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PENDING_NAME = ".save-pending.json"
LOCK_NAME = ".kgengine.lock"
NEW_SUFFIX = ".kge-new"
FULL_HASH_LIMIT = 1 << 30  # larger files: hash their first and last PARTIAL_HASH_BYTES (loads stay fast)
PARTIAL_HASH_BYTES = 64 << 20


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _run_writer(write: Callable[[Path], None], tmp: Path, final: Path) -> None:
    """``write(tmp)``; an I/O failure comes out as an ``OSError`` naming ``final`` (writes through a file
    object raise errno without a file name, and safetensors reports it only in its message)."""
    try:
        write(tmp)
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(final)) from e
        raise
    except Exception as e:
        m = re.search(r"os error (\d+)", str(e))
        if m:
            n = int(m.group(1))
            raise OSError(n, os.strerror(n), str(final)) from e
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: ``path`` is either the old file or the complete new one.

    On any failure (a full disk, a kill, an exception in ``write``) the temporary file is removed
    and the error re-raised; ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _run_writer(write, tmp, path)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_config(path: str | os.PathLike, obj: dict, version: int = FORMAT_VERSION) -> None:
    """``obj`` plus ``format_version`` as JSON, atomically (values JSON cannot hold become strings)."""
    atomic_write_text(path, json.dumps({"format_version": version, **obj}, indent=2, default=str) + "\n")


def read_config(path: str | os.PathLike, supported: int = FORMAT_VERSION) -> dict:
    """A JSON config written by :func:`write_config` (or before versions existed: version 1).

    ValueError naming the file for bad JSON, a non-object, or a ``format_version`` newer than
    ``supported`` (written by a newer release)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object")
    version = obj.get("format_version", 1)
    if not isinstance(version, int) or version > supported:
        raise ValueError(f"{path}: format_version {version!r} is newer than this release reads ({supported}); "
                         "upgrade kgengine")
    return obj


def save_tensors(path: str | os.PathLike, tensors: dict) -> None:
    """A safetensors file, written atomically (contiguous CPU copies of ``tensors``)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(flat, str(p)))


def file_digest(path: Path) -> dict:
    """``{"size", "sha256"}`` (``"partial": true`` when only the head and tail were hashed)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return {"size": size, "sha256": h.hexdigest()}
        h.update(f.read(PARTIAL_HASH_BYTES))
        f.seek(size - PARTIAL_HASH_BYTES)
        h.update(f.read(PARTIAL_HASH_BYTES))
    return {"size": size, "sha256": h.hexdigest(), "partial": True}


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path}: unreadable ({e}); the folder was changed after it was saved") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ModelFolderError(f"{path}: not a kgengine manifest (expected an object with 'files')")
    return data


def _roll_forward(folder: Path, pending: dict) -> None:
    for name in pending["files"]:
        new = folder / (name + NEW_SUFFIX)
        if new.exists():
            os.replace(new, folder / name)
    for name in pending.get("remove", []):
        (folder / name).unlink(missing_ok=True)
    fsync_dir(folder)
    atomic_write_json(folder / MANIFEST_NAME, {"format_version": FORMAT_VERSION, "files": pending["merged"]})
    (folder / PENDING_NAME).unlink(missing_ok=True)
    fsync_dir(folder)


def recover_folder(folder: str | os.PathLike) -> None:
    """Finish a committed save that was interrupted, or discard the files of an uncommitted one."""
    folder = Path(folder)
    pending_file = folder / PENDING_NAME
    try:
        pending = _read_manifest(pending_file)
        if pending is not None:
            _roll_forward(folder, pending)
            return
        for stray in folder.glob("*" + NEW_SUFFIX):
            stray.unlink()
    except PermissionError as e:
        raise ModelFolderError(f"{folder}: an interrupted save needs finishing, but the folder is not "
                               f"writable ({e.strerror}); rerun with write access") from None


def commit_folder(folder: str | os.PathLike, writers: dict[str, Callable[[Path], None]],
                  remove: Iterable[str] = ()) -> dict:
    """Write ``{name: write(path)}`` into ``folder`` as one unit and delete ``remove``; returns the manifest.

    Files already listed in the folder's manifest and neither rewritten nor removed stay listed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    remove = sorted(set(remove) - set(writers))
    staged: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            new = folder / (name + NEW_SUFFIX)
            staged[name] = new
            _run_writer(write, new, folder / name)
            _fsync_file(new)
        fsync_dir(folder)
        files = {name: file_digest(p) for name, p in staged.items()}
        old = _read_manifest(folder / MANIFEST_NAME) or {"files": {}}
        merged = {k: v for k, v in old["files"].items() if k not in files and k not in remove}
        merged.update(files)
        pending = {"format_version": FORMAT_VERSION, "files": files, "remove": remove, "merged": merged}
        atomic_write_json(folder / PENDING_NAME, pending)  # the commit point
    except BaseException:
        for p in staged.values():
            p.unlink(missing_ok=True)
        raise
    _roll_forward(folder, pending)
    return {"format_version": FORMAT_VERSION, "files": merged}


def verify_folder(folder: str | os.PathLike) -> dict | None:
    """Check the files that ``folder``'s manifest lists; ``None`` for a folder saved without one."""
    folder = Path(folder)
    if (folder / PENDING_NAME).exists() or any(folder.glob("*" + NEW_SUFFIX)):
        recover_folder(folder)
    manifest = _read_manifest(folder / MANIFEST_NAME)
    if manifest is None:
        return None
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"{path}: missing; the folder's manifest lists it (an incomplete copy?)")
        if not isinstance(want, dict) or "size" not in want or "sha256" not in want:
            raise ModelFolderError(f"{folder / MANIFEST_NAME}: entry {name!r} is malformed")
        got = file_digest(path)
        if got["size"] != want["size"]:
            raise ModelFolderError(f"{path}: {got['size']} bytes, but {want['size']} were saved; the file was "
                                   "changed after the save (truncated or replaced)")
        if got["sha256"] != want["sha256"]:
            raise ModelFolderError(f"{path}: its content differs from what was saved (SHA-256 mismatch); the file "
                                   "was changed after the save")
    return manifest


# ---- the save-path lock -------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # realpath -> [fd, depth]: re-entrant within this process


class SaveLock:
    """Exclusive ownership of ``folder`` for one run (re-entrant within a process)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def __enter__(self) -> "SaveLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise SavePathError(f"--save-path {self.folder}: is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise SavePathError(f"--save-path {self.folder}: a part of the path is a file, not a folder") from None
        key = os.path.realpath(self.folder)
        if key in _HELD:
            _HELD[key][1] += 1
            return
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown owner"
            os.close(fd)
            raise RunLockedError(f"--save-path {self.folder} is in use by another run ({owner}); wait for it to "
                                 "finish or choose another folder") from None
        previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if previous:
            warnings.warn(f"{path}: taking over a lock left by a run that is gone ({previous})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        _HELD[key] = [fd, 1]

    def release(self) -> None:
        key = os.path.realpath(self.folder)
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            fd = held[0]
            del _HELD[key]
            os.ftruncate(fd, 0)  # an empty lock file: nobody's, and no stale-lock warning for the next run
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
