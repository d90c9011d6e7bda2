"""The demo keeps nothing: where Gradio puts uploads, and how they leave.

Brain scans are personal data, and a server runs for weeks: an upload must not outlive its
answer. Three layers, each for what the others cannot reach:

* after each response the handler removes the uploaded files it was given (``remove_uploads``;
  only files inside Gradio's upload folder, never a caller's own files);
* what Gradio itself writes for the page (the Grad-CAM montages, the preview of the upload) is
  removed by ``gr.Blocks(delete_cache=...)`` a few minutes later, once the browser has fetched it,
  and at shutdown;
* the server runs in a private folder under ``$GRADIO_TEMP_DIR`` (``private_temp_dir``) that is
  removed, with whatever Gradio left in it, when the server stops.

Messages shown on the page never name a server path (``hide_paths``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ['upload_folder', 'upload_paths', 'remove_uploads', 'hide_paths', 'private_temp_dir']


def upload_folder() -> Path:
    """Where Gradio stores uploads (its ``get_upload_folder``: ``$GRADIO_TEMP_DIR``, else
    ``<temp>/gradio``), without importing gradio."""
    return Path(
        os.environ.get('GRADIO_TEMP_DIR') or Path(tempfile.gettempdir()) / 'gradio'
    ).resolve()


def upload_paths(payload: Any) -> list[str]:
    """File paths of a ``gr.File`` value as an un-preprocessed handler receives it (a list of
    FileData dicts), or as Python callers pass it (paths, or objects with ``.name``).

    Handlers take the raw value (``preprocess=False``) because gr.File's own preprocessing leaves
    an empty temporary file in the cache per uploaded file."""
    items = payload if isinstance(payload, (list, tuple)) else [payload] if payload else []
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get('path')
        else:
            item = getattr(item, 'path', None) or getattr(item, 'name', item)
        if item:
            out.append(str(item))
    return out


def remove_uploads(paths: Iterable[str | os.PathLike], keep: Iterable[str] = ()) -> int:
    """Delete the uploaded files among ``paths`` (those inside ``upload_folder()``; never other
    files), and the per-upload folders Gradio made for them once empty. ``keep``: paths to leave
    (the page's own example files). Returns how many files were removed."""
    root = upload_folder()
    kept = {str(Path(p).resolve()) for p in keep}
    removed = 0
    for path in paths:
        path = Path(path).resolve()
        if str(path) in kept or root not in path.parents:
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError:  # a folder, or no permission: leave it to the shutdown clean-up
            continue
        folder = path.parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            folder = folder.parent
    return removed


def hide_paths(text: str, paths: Iterable[str | os.PathLike]) -> str:
    """``text`` with each of ``paths`` (and its folder) replaced by its file name: a message for
    a web visitor names their file, not where the server keeps it."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        text = text.replace(path, Path(path).name)
        parent = str(Path(path).parent)
        if parent not in ('', '.', '/'):
            text = text.replace(parent + os.sep, '')
    return text


@contextmanager
def private_temp_dir(prefix: str = 'adni-demo-') -> Iterator[Path]:
    """Point ``$GRADIO_TEMP_DIR`` at a new folder inside it (or inside ``<temp>/gradio``) while
    the server runs; remove the folder, and everything Gradio left in it, at the end.

    Call before gradio creates any component (it reads the variable when it does)."""
    base = upload_folder()
    base.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    before = os.environ.get('GRADIO_TEMP_DIR')
    os.environ['GRADIO_TEMP_DIR'] = str(private)
    try:
        yield private
    finally:
        if before is None:
            os.environ.pop('GRADIO_TEMP_DIR', None)
        else:
            os.environ['GRADIO_TEMP_DIR'] = before
        shutil.rmtree(private, ignore_errors=True)
