"""Atomic file writes and the dataset root, shared by every writer of the projects and the applications.

A writer never produces a partial file: the payload goes to a temporary file in the target's folder (same file
system, so the final step is an atomic rename), which is flushed to disk (``fsync``) and renamed over the target
only when the payload completed. When anything fails (the payload raises, even ``KeyboardInterrupt``, or the
fsync or the rename fails) the temporary file is removed and the target is untouched (its previous content, if
any, stays).

* :func:`atomic_path`: a context manager yielding a temporary *path* for writers that open the file themselves
  (matplotlib ``savefig``, PyAV containers, ``Image.save``). The temporary name keeps the target's extension, so
  writers that pick the format from the name behave as with the target name. (For ``torch.save`` use
  :func:`atomic_torch_save`: given a path, torch writes the file name into the archive.)
* :func:`atomic_write`: a context manager yielding an open *file* (``mode`` ``"wb"`` or ``"w"``).
* :func:`atomic_write_text`, :func:`atomic_write_json` (strict JSON: NaN raises; see :func:`json_safe`),
  :func:`atomic_torch_save`, :func:`atomic_save_npz`: the common payloads in one call.
* :func:`datasets_root` / :func:`dataset_path`: ``$RGTP_DATASETS``, falling back to ``./datasets``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from typing import IO, Any, Dict, Iterator, Optional, Union

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "atomic_save_npz",
    "json_safe",
    "datasets_root",
    "dataset_path",
    "DATASETS_ENV",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The environment variable naming the dataset root.
DATASETS_ENV = "RGTP_DATASETS"


def _temporary_file(path: str) -> str:
    """Create an empty hidden file ``.<stem>.tmp-<random><ext>`` beside ``path`` (created exclusively, with the
    permissions a plain ``open`` would give, unlike ``mkstemp``'s 0600) and return its path."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(name)
    for _ in range(100):
        tmp = os.path.join(folder, f".{stem}.tmp-{secrets.token_hex(4)}{ext}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path!r}")


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; write the payload to it inside the ``with`` block. On a normal exit
    the file is fsynced and renamed to ``path``; on any failure (in the block, the fsync or the rename) it is
    removed and the exception propagates. Missing parent folders are created.

    >>> with atomic_path("out/model.pth") as tmp:   # doctest: +SKIP
    ...     torch.save(state, tmp)
    """
    target = os.fspath(path)
    tmp = _temporary_file(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not every file system allows it
        _fsync(os.path.dirname(os.path.abspath(target)), directory=True)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield ``open(<temporary file>, mode, **open_kwargs)``; ``path`` receives the content when the block
    completes (see :func:`atomic_path`). ``mode`` must write from scratch (``"wb"``, ``"w"``, ``"wt"``, ...).
    """
    if not mode.startswith("w"):
        raise ValueError(
            f"atomic_write: mode {mode!r} is not allowed: a write mode such as 'wb' or 'w'"
        )
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


def atomic_write_text(text: str, path: PathLike, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_json(
    obj: Any, path: PathLike, indent: Optional[int] = 2, **dump_kwargs: Any
) -> None:
    """Write ``obj`` as strictly valid JSON (indented by default) to ``path`` atomically. A NaN or infinity raises
    ValueError and leaves no file: pass the object through :func:`json_safe` first."""
    dump_kwargs.setdefault("allow_nan", False)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, **dump_kwargs)


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically. It saves through a file object: ``torch.save`` to a *path* names
    the archive's records after the file, which would put the random temporary name into the bytes; this way the
    same object always gives the same bytes."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_save_npz(path: PathLike, **arrays: Any) -> None:
    """``np.savez`` of ``arrays`` to exactly ``path`` (no ``.npz`` appended), atomically."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def json_safe(obj: Any, reasons: Optional[Dict[str, str]] = None) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (valid JSON has no NaN) and numpy scalars made
    Python numbers. At the top level of a dict, a key whose value became ``None`` gets ``<key>_reason`` beside it:
    ``reasons[key]``, or "undefined"."""
    import numpy as np

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, np.floating) and not np.isfinite(v):
            return None
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    out = clean(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            if out[k] is None and v is not None and f"{k}_reason" not in out:
                out[f"{k}_reason"] = (reasons or {}).get(k, "undefined")
    return out


def datasets_root() -> str:
    """The dataset root: ``$RGTP_DATASETS``, falling back to ``./datasets`` (relative to the working
    directory)."""
    return os.environ.get(DATASETS_ENV, "datasets")


def dataset_path(path: PathLike) -> str:
    """``path`` when it is absolute, else ``path`` under :func:`datasets_root`."""
    p = os.fspath(path)
    return p if os.path.isabs(p) else os.path.join(datasets_root(), p)
