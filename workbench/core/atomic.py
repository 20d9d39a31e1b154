"""Writing files so that a crash or Ctrl-C never leaves half a file behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, content: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``content`` to ``path`` atomically: into a hidden file beside it, then renamed over it.

    ``content`` is the bytes or text to write, or a function ``write(tmp_path)`` that writes the file
    itself (``torch.save``, ``np.save``, safetensors, ...). The temporary file keeps ``path``'s
    suffix, so writers that choose a format by extension see the right one. The parent folder is
    created if needed; on any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
