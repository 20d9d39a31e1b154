"""Distil the k-fold teacher ensemble into the shipped student.

    python distill.py            # OOF table of teachers/families/ensemble, soft labels, student, export
    python distill.py --cv       # also cross-validate the student on the teachers' folds first
    python distill.py recipe=student teachers=[unet_effnet,fpn_effnet] teacher_folds=[0,1,2] epochs=10

Outputs: runs/<name>/ (soft-label cache, per-fold students with --cv, full student, oof_report.json/.md)
and the exported model file (export=weights/student.safetensors by default).
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from workbench.cli import fail_cleanly  # noqa: E402


@fail_cleanly
def main(argv: list[str]) -> int:
    from workbench.distill_run import run
    cv = "--cv" in argv
    return run([a for a in argv if a != "--cv"], cv=cv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
