#!/usr/bin/env bash
# The DSMLR campaign as run for the README's Results (2-core CPU, bf16): 3 folds of each teacher
# family, the H2O seed baseline, then distillation with the student's own cross-validation.
# Every step resumes where it stopped: rerun this script after an interruption.
set -euo pipefail
# PASSIVE: OpenMP threads sleep instead of spinning when the 2 cores are shared with other work.
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 OMP_WAIT_POLICY=PASSIVE
PY=${PY:-python}
mkdir -p runs/logs
for fold in 0 1 2; do
  $PY train.py recipe=unet_effnet fold=$fold 2>&1 | tee -a runs/logs/unet_effnet_fold$fold.log
  $PY train.py recipe=fpn_effnet fold=$fold 2>&1 | tee -a runs/logs/fpn_effnet_fold$fold.log
done
$PY train.py recipe=h2o_seed 2>&1 | tee -a runs/logs/h2o_seed.log
$PY distill.py --cv 2>&1 | tee -a runs/logs/distill.log
