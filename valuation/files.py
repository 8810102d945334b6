"""Shared file helpers: atomic writes (nothing half-written is ever left behind) and SHA-256 hashes.

Every writer in payoutsim goes through `atomic_path`: the content is written to a temporary file in
the destination folder, made readable like a normal file (mode 0666 filtered by the umask, not the
0600 that `mkstemp` leaves), then moved into place with `os.replace`; on any error the temporary file
is removed and the destination is untouched. When the write fails for lack of room or an I/O error
(``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EIO``: `WRITE_ERRNOS`) the error becomes an `OutputError` (exit 1, one
line naming the file and the reason) instead of a traceback.

Every output path a command will write is checked first with `check_writable` (a file) or
`check_writable_dir` (a folder), before any expensive work: a path that is a folder, lies under a
regular file, or sits in a folder where no file can be created (permissions, a read-only or virtual file
system such as ``/proc``) is an `InputError` (exit 2) naming the path and the reason, not a traceback
after the work. `check_outputs` checks several paths at once and says that nothing was written.

Every content hash goes through `sha256_file` (a file's bytes) or `sha256_json` (the canonical JSON of a
value: sorted keys, compact separators, UTF-8), so a hash computed in one place matches one computed in another.

Every input file that must be a file goes through `require_file` (a folder is named a folder, not "not
found"); every TOML file's bytes go through `toml_text` (a byte-order mark is named as such).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from valuation.errors import InputError, OutputError

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: errno values of a failed write that are the machine's state, not a bug: turned into `OutputError`
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` filtered by the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path`` atomically.

    On any error the temporary file is removed and ``path`` is untouched; an `OSError` with an errno in
    `WRITE_ERRNOS` (disk full, quota, file too large, I/O error) is raised as `OutputError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(path, err) from None
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            raise write_error(path, err) from None
        raise


def write_error(path: Path, err: OSError) -> OutputError:
    """The one-line `OutputError` of a failed write of ``path``."""
    reason = err.strerror or os.strerror(err.errno or 0)
    detail = f"cannot write {path}: {reason} [{errno.errorcode.get(err.errno or 0, '?')}]"
    return OutputError(f"{detail}; the file was left as it was", detail=detail)


def check_writable(path: str | Path, *, field: str | None = None) -> Path:
    """Check that a file can be written at ``path`` (created or replaced by `atomic_path`); return it.

    Raises `InputError` (``file`` = ``path``, ``field`` = ``field``) when ``path`` is a folder, when a
    folder on its way is a regular file, or when no file can be created in its folder (the nearest
    existing folder is probed by creating and removing a temporary file there). Creates nothing.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{NOT_A_FILE}: give a file path", file=path, field=field)
    _check_folder(path.parent, path, field)
    return path


def check_writable_dir(path: str | Path, *, field: str | None = None) -> Path:
    """Check that ``path`` is, or can be created as, a folder that files can be written in; return it.

    Raises `InputError` when ``path`` (or a folder on its way) is a regular file, or when nothing can be
    created in the nearest existing folder. Creates nothing.
    """
    path = Path(path)
    _check_folder(path, path, field)
    return path


def check_outputs(targets: Mapping[str, str | Path | None]) -> None:
    """`check_writable` on every ``field -> path`` of ``targets`` (None: not asked for), all before
    anything is written: one `InputError` lists every problem and, when more than one output was asked
    for, says that none of them was written."""
    asked = {f: Path(p) for f, p in targets.items() if p is not None}
    problems: list[str] = []
    for field, path in asked.items():
        try:
            check_writable(path, field=field)
        except InputError as err:
            problems.append(str(err))
    if problems:
        tail = "; nothing was written" if len(asked) > 1 else ""
        raise InputError("; ".join(problems) + tail)


def _check_folder(folder: Path, target: Path, field: str | None) -> None:
    """``folder`` (where ``target`` goes) exists as a folder one can create files in, or its nearest
    existing ancestor is such a folder and every missing part can be created there."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise InputError(f"cannot create folder {existing}: it is a broken link", file=target, field=field)
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(
            f"cannot write under {existing}: it is a file, not a folder", file=target, field=field
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".payoutsim-write-check.", dir=existing)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot create files in folder {existing}: {reason}", file=target, field=field) from None
    os.close(fd)
    os.unlink(probe)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines written as given)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` as indented JSON (+ a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def sha256_json(data: Any) -> str:
    """SHA-256 hex of ``json.dumps(data, sort_keys=True)`` (compact separators, UTF-8)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: How every check names a folder given where a file is expected (inputs, outputs, ledgers, receipts, keys).
NOT_A_FILE = "is a directory, not a file"


def require_file(
    path: str | Path,
    *,
    missing: str = "file not found",
    file: str | Path | None = None,
    field: str | None = None,
) -> Path:
    """`path` when it names a regular file (or a link to one); otherwise `InputError`, exit 2.

    The message says what is there instead: `missing` when nothing is, ``is a directory, not a file`` for a
    folder, ``is not a regular file`` for a device, pipe or socket. Without `file` the error names `path`
    as its file (``dir.csv: is a directory, not a file``). With `file` (the file that refers to `path`, e.g.
    a scenario) it names `file` and `field` and puts `path` in the message (``scenario.toml: field
    'valuation.utilities': /x/tables is a directory, not a file``); `missing` is then the whole message.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        problem = NOT_A_FILE
    elif p.exists():
        problem = "is not a regular file (a device, a pipe or a socket)"
    else:
        raise InputError(missing, file=p if file is None else file, field=field)
    if file is None:
        raise InputError(problem, file=p, field=field)
    raise InputError(f"{p} {problem}", file=file, field=field)


def toml_text(raw: bytes, *, file: str | Path) -> str:
    """The text of a TOML file's bytes: UTF-8 without a byte-order mark, else `InputError` naming `file`
    (a BOM is named as such: tomllib would only say "invalid statement" at line 1, column 1)."""
    if raw.startswith(UTF8_BOM):
        raise InputError("starts with a byte-order mark (BOM); save it as UTF-8 without BOM", file=file)
    if raw.startswith(UTF16_BOMS):
        raise InputError("starts with a UTF-16 byte-order mark (BOM); save it as UTF-8 without BOM", file=file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (invalid byte at offset {err.start})", file=file) from None
