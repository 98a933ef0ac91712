"""Atomic file writes: the one helper every writer of the package goes through."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process's umask (reading it means setting it: it is set back at once)."""
    old = os.umask(0)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` on success.

    The folder of ``path`` is created when missing. When the block raises (an error, a
    ``KeyboardInterrupt``), the temporary file is removed and ``path`` is left as it was, so a
    reader never sees a half-written file. The final file gets the mode of a normally created
    file (``0o666`` less the umask), not the ``0o600`` of :func:`tempfile.mkstemp`.

    Examples
    --------
    >>> with atomic_write("labels.csv") as tmp:  # doctest: +SKIP
    ...     table.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
