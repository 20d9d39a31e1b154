"""Train one fold of a recipe:  python train.py recipe=teacher_fold0 [key=value ...]

Examples:
    python train.py recipe=teacher_fold0
    python train.py recipe=unet_effnet fold=3 epochs=12
    python train.py recipe=teacher_fold0 data=../shared/datasets/dsmlr-carparts epochs=1
    torchrun --standalone --nproc_per_node=4 train.py recipe=unet_effnet fold=0     # one run on 4 GPUs (DDP)
    python train.py recipe=unet_effnet launcher=slurm folds_to_run=0-4 partition=gpu gpus_per_job=1
Run it again after an interruption: it resumes after the last finished epoch.
launcher=local|slurm sends each fold of folds_to_run as a job (README, "Scaling out").
Every key of workbench/core/config.py:DEFAULTS can be given as key=value.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from workbench.core import config  # noqa: E402
from workbench.core.cli import fail_cleanly, wants_help  # noqa: E402


@fail_cleanly(interrupted="interrupted; run the same command again to resume")
def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__)
        return 0
    from rich.text import Text

    from workbench.core.console import console
    from workbench.data.dataset import load_dataset
    from workbench.data.folds import split_for
    from workbench.training import distributed, fit

    cfg = config.resolve(argv)
    if cfg["launcher"] != "none":
        from workbench.training.launch import launch
        return launch(cfg, argv)
    distributed.setup(cfg["device"])  # under torchrun: join the run's processes; only rank 0 prints
    try:
        console.rule(Text(f"recipe {cfg['recipe'] or '(defaults)'}"))
        console.print(config.dump(cfg), highlight=False, markup=False)  # values are the user's text, not markup
        ds = load_dataset(cfg["data"], cfg["image_size"])
        train_idx, val_idx, folds_file = split_for(cfg, ds)
        console.print(f"{len(ds)} images, {ds.schema.num_classes} classes, folds from {folds_file}", markup=False)
        fit(cfg, ds, train_idx, val_idx, meta_extra={"folds_file": str(folds_file)})
    finally:
        distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
