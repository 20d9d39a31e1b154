"""Distil the k-fold teacher ensemble into the shipped student.

    python distill.py            # OOF table of teachers/families/ensemble, soft labels, student, export
    python distill.py --cv       # first cross-validate student and hard-label twin on the teachers' folds
    python distill.py --cv-only teacher_folds=[0] kd_weight=0.5 temperature=2 name=kd_sweep_a   # KD sweep
    python distill.py --cv export=weights/student.safetensors       # ship the student
    python distill.py --report-only teachers=[unet_effnet_ds_e32,fpn_effnet] teacher_folds=[0,1,2] name=report
                                 # only the OOF table of teachers/families/ensemble and the post-processing
                                 # chosen on the best family; trains nothing
    python distill.py --publish runs/fpn_effnet/fold0 [RUN ...]      # keep a finished teacher (fp16) in
                                                                     # weights/teachers/ for a new machine
    python distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64 [--dry-run]
                                 # choose a model file's post-processing again on more OOF folds of its
                                 # recipe (cross-fitted) and rewrite only that metadata; trains nothing

Outputs: runs/<name>/ (soft-label cache, per-fold students with --cv, full student, oof_report.json/.md,
teaching_ensemble_oof_table.npz: the soft labels' source scored image by image, for analysis.bootstrap)
and the exported model file (export=..., by default runs/<name>/student.safetensors).
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from workbench.core.cli import fail_cleanly  # noqa: E402


@fail_cleanly
def main(argv: list[str]) -> int:
    from workbench.distillation.pipeline import run
    if "--postprocess" in argv:
        from workbench.distillation.retune import main as postprocess
        return postprocess([a for a in argv if a != "--postprocess"])
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    if argv[:1] == ["--publish"]:
        from workbench.distillation.teachers import publish
        if len(argv) == 1:
            raise FileNotFoundError("--publish needs at least one finished run folder, e.g. runs/fpn_effnet/fold0")
        for run_dir in argv[1:]:
            print(f"published {run_dir} -> {publish(run_dir)}")
        return 0
    flags = {a for a in argv if a in ("--cv", "--cv-only", "--report-only")}
    if "--report-only" in flags and len(flags) > 1:
        from workbench.exceptions import UsageError
        raise UsageError("--report-only trains nothing: it cannot be combined with --cv or --cv-only")
    rest = [a for a in argv if a not in flags]
    if "--report-only" in flags:
        return run(rest, cv=False, final=False)
    return run(rest, cv=bool(flags), final="--cv-only" not in flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
