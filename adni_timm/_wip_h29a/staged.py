"""(to move into utils/files.py)"""
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
import os


@contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A folder written whole or not at all: its files go to a hidden sibling, renamed into place
    when the block ends without an error. A full disk or Ctrl-C leaves no half-written folder,
    and the folder it replaces stays whole until then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.partial-', dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{path.name}.old-', dir=path.parent))
            path.rename(old / path.name)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
