"""Writing files so that a crash or Ctrl-C never leaves half a file behind.

A file is written into a hidden temporary beside it, ``.<stem>.tmp<pid><suffix>``, and renamed over
the real name when complete; a failure removes the temporary. Only a process that is killed outright
(SIGKILL, power loss) can leave one behind: :func:`remove_stale_temporaries` deletes those of
processes that no longer run, and every command calls it on the folders it writes into before it
starts (training runs, inference output, COCO import, reports).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

# .<name>.tmp<pid>[.suffix]: files of atomic_write, folders of staged imports (workbench.data.coco)
TEMPORARY = re.compile(r"^\..+\.tmp(\d+)(\.[^.]+)?$")


def atomic_write(path: str | Path, content: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``content`` to ``path`` atomically: into a hidden file beside it, then renamed over it.

    ``content`` is the bytes or text to write, or a function ``write(tmp_path)`` that writes the file
    itself (``torch.save``, ``np.save``, safetensors, ...). The temporary file keeps ``path``'s
    suffix, so writers that choose a format by extension see the right one. The parent folder is
    created if needed; on any error the temporary file is removed and ``path`` is left as it was.
    The file gets the usual permissions (0644 with umask 022), even from writers that create their
    files private (safetensors writes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content)
        else:
            content(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def temporary_name(path: Path) -> Path:
    """The hidden temporary this process writes ``path`` through (a file or, for a staged folder,
    a folder)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (:data:`TEMPORARY`) in ``folder`` whose writing process is gone, i.e.
    what a killed run left behind; returns them. Those of running processes are left alone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = TEMPORARY.match(p.name)
        if m is None or _running(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a name we do not understand): not ours to judge
    return True


def _umask() -> int:
    """The process's umask, read without changing it (writer threads may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


_UMASK_AT_IMPORT = os.umask(0o022)
os.umask(_UMASK_AT_IMPORT)
