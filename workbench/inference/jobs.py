"""Which input files become which output masks, for ``inference.py``.

- only the top level of ``--input`` is read; with ``--recursive`` sub-folders are too, and their
  structure is mirrored in the output (``in/a/b.jpg`` -> ``out/a/b.png``). Hidden files and folders
  (name starting with ".") are ignored. ``--input`` may also be a single image file.
- every file is tried (whatever its extension) and those that do not decode are reported by the run;
  a file whose mask would overwrite an input file or another file's mask (``car.jpg`` and ``car.png``
  both give ``car.png``) is skipped with a reason.
- ``--shard i/n`` keeps the i-th (from 0) of n contiguous parts of the sorted relative paths, after
  the collisions above were settled on the whole listing: n jobs with i = 0..n-1 write disjoint
  outputs into the same folder and together exactly the masks of one unsharded run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import remove_stale_temporaries
from ..exceptions import InferenceError


@dataclass
class Job:
    src: Path   # input file (as given on the command line, joined with its relative path)
    dst: Path   # output PNG


def list_inputs(root: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """Relative paths of the non-hidden files under ``root`` (top level only unless ``recursive``),
    sorted; the folder ``exclude`` (the output folder, if it lies inside) is not entered."""
    if not recursive:
        return sorted(Path(p.name) for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    found = []
    for folder, dirs, files in os.walk(root, onerror=_raise):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or (here / d).resolve() != exclude))
        found += [(here / f).relative_to(root) for f in files if not f.startswith(".") and (here / f).is_file()]
    return sorted(found)


def _raise(err: OSError) -> None:
    raise err


def plan_jobs(input_path: Path, output: Path, recursive: bool,
              shard: tuple[int, int] = (0, 1)) -> tuple[list[Job], list[tuple[str, str]]]:
    """Input files and their output paths, plus (file, reason) of those that must be skipped because
    their mask would overwrite an input file or another file's mask; only those of ``shard`` (i, n)."""
    if not input_path.exists():
        raise InferenceError(f"input folder not found: {input_path}")
    if input_path.is_file():
        root, rels = input_path.parent, [Path(input_path.name)]
    elif input_path.is_dir():
        root = input_path
        try:
            rels = list_inputs(root, recursive, exclude=output.resolve())
        except OSError as err:
            raise InferenceError(f"cannot read input folder {input_path}: {err.strerror or err}") from err
        if not rels:
            subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            hint = f" (it has {len(subfolders)} sub-folder(s): add --recursive to read them)" \
                if subfolders and not recursive else ""
            raise InferenceError(f"no image files in input folder {input_path}{hint}")
    else:
        raise InferenceError(f"input is neither a folder nor a file: {input_path}")

    inputs = {(root / rel).resolve() for rel in rels}
    mine = set(shard_part(rels, *shard))
    jobs, skipped, taken = [], [], {}
    for rel in rels:
        src, dst = root / rel, output / rel.parent / (rel.stem + ".png")
        key = dst.resolve()
        if rel not in mine:
            taken.setdefault(key, src)  # another shard's file: it still claims its mask
        elif key in inputs:
            skipped.append((str(src), f"its mask {dst} would overwrite an input file; use another --output folder"))
        elif key in taken:
            skipped.append((str(src), f"its mask {dst} would overwrite the mask of {taken[key]} (same stem)"))
        else:
            taken[key] = src
            jobs.append(Job(src, dst))
    return jobs, skipped


def shard_part(rels: list[Path], i: int, n: int) -> list[Path]:
    """The i-th (0 <= i < n) of n contiguous, nearly equal parts of the sorted list ``rels``."""
    return rels[len(rels) * i // n:len(rels) * (i + 1) // n]


def prepare_output(output: Path, jobs: list[Job] = ()) -> None:
    """Create ``output``, check that files can be written in it, and remove the half-written masks a
    killed earlier run left in it or in the sub-folders ``jobs`` write into."""
    if output.exists() and not output.is_dir():
        raise InferenceError(f"output folder {output} exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InferenceError(f"cannot create output folder {output}: {err.strerror or err}") from err
    try:
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InferenceError(f"output folder {output} is not writable: {err.strerror or err}") from err
    for folder in {output, *(job.dst.parent for job in jobs)}:
        remove_stale_temporaries(folder)
