#!/usr/bin/env bash
# Campaign 2 on DSMLR (docs/campaign2.md): fold-0 measurements, then 3 folds of each teacher family,
# the H2O seed baseline, the KD sweep on fold 0, distillation with the student's cross-validation
# (fold-k teachers teach student fold k; the FPN teachers are the hard-label twins) and the final
# student. Every step resumes where it stopped (finished runs are skipped): rerun after an interruption.
# Finished teachers are published (fp16) under weights/teachers/ while a campaign runs, so a new machine need not
# retrain them; they leave the tree when the student ships (campaign 2: restore with git checkout 0af5327 -- weights/teachers).
set -euo pipefail
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 OMP_WAIT_POLICY=PASSIVE
PY=${PY:-python}
UNET=${UNET:-unet_effnet_ds}  # the UNet family: deep supervision won on fold 0 (docs/campaign2.md)
DATA=${DATA:-../shared/datasets/dsmlr-carparts}
mkdir -p runs/logs
log() { tee -a "runs/logs/$1.log"; }

# fold-0 measurements (issue 11)
$PY train.py recipe=fpn_effnet fold=0 2>&1 | log fpn_effnet_fold0
$PY train.py recipe=fpn_effnet fold=0 image_size=256 crop_size=0 name=ablation_fpn_squash256 2>&1 | log ablation_fpn_squash256
$PY train.py recipe=unet_effnet fold=0 2>&1 | log unet_effnet_fold0
# deep supervision on fold 0 (docs/campaign2.md): adopted into unet_effnet only if it beats the run above
$PY train.py recipe=unet_effnet_ds fold=0 2>&1 | log unet_effnet_ds_fold0
$PY -m analysis.bootstrap --a runs/unet_effnet --b runs/unet_effnet_ds --data ../shared/datasets/dsmlr-carparts --folds 0 \
  2>&1 | log unet_ds_vs_plain
# KD sweep on fold 0 (docs/campaign2.md): each point chosen after the previous one and the soft-label statistics
$PY distill.py --cv-only teacher_folds=[0] name=kd_w0.5_t2 kd_weight=0.5 temperature=2 2>&1 | log kd_w0.5_t2
$PY distill.py --cv-only teacher_folds=[0] name=kd_fpn_add_w1_t2 kd_mix=additive kd_weight=1 temperature=2 \
  2>&1 | log kd_fpn_add_w1_t2
$PY distill.py --cv-only teacher_folds=[0] name=kd_fpn_ch_w1_t1 kd_loss=channel kd_mix=additive kd_weight=1 \
  temperature=1 2>&1 | log kd_fpn_ch_w1_t1
# the UNet-DS family as student (its twin: the unet_effnet_ds teacher of the fold, reused)
$PY distill.py --cv-only recipe=student_unet teacher_folds=[0] name=kd_unet_ch_w1_t1 kd_loss=channel kd_mix=additive \
  kd_weight=1 temperature=1 2>&1 | log kd_unet_ch_w1_t1

# teachers, baseline
for fold in 1 2; do
  $PY train.py recipe=fpn_effnet fold=$fold 2>&1 | log fpn_effnet_fold$fold
  $PY train.py recipe=$UNET fold=$fold 2>&1 | log ${UNET}_fold$fold
done
$PY distill.py --publish runs/fpn_effnet/fold{0,1,2} runs/$UNET/fold{0,1,2}
$PY train.py recipe=h2o_seed 2>&1 | log h2o_seed

# the student (README, Results): UNet-DS with channel-wise KD, cross-validated on fold 0 (the run above is reused),
# final student on all 400 images from the teachers of folds 0 and 1 (shipped in sessions 5-7, with
# export=weights/student.safetensors; left in runs/ here, so a rerun never overwrites the shipped file)
$PY distill.py --cv recipe=student_unet name=kd_unet_ch_w1_t1 kd_loss=channel kd_mix=additive kd_weight=1 temperature=1 \
  cv_folds=[0] teacher_folds=[0,1] 2>&1 | log final_student_unet
# the student's CV on folds 1 and 2 (twins = the UNet-DS teachers of those folds) and the OOF report over the
# teachers of folds 0-2; finished folds are reused. README Results shows the report after fold 1 (cv_folds=[0,1]).
$PY distill.py --cv-only recipe=student_unet name=kd_unet_ch_w1_t1 kd_loss=channel kd_mix=additive kd_weight=1 \
  temperature=1 cv_folds=[0,1,2] teacher_folds=[0,1,2] 2>&1 | log student_cv_folds012

# session 7 (docs/campaign2.md, "A clearly stronger teacher"): the UNet-DS of fold 0 for 32 epochs, then the
# 16-epoch student of fold 0 taught by it alone; its twin is the 16-epoch unet_effnet_ds run of fold 0, so the
# student trains in fp32 as that run did (on a CPU with native bf16, precision=auto would mean bf16)
$PY train.py recipe=unet_effnet_ds fold=0 epochs=32 name=unet_effnet_ds_e32 2>&1 | log unet_effnet_ds_e32_fold0
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e32t teachers=[unet_effnet_ds_e32] teacher_folds=[0] \
  cv_folds=[0] twin=unet_effnet_ds precision=fp32 2>&1 | log kd_unet_e32t

# session 8 (docs/campaign2.md, "Equal epochs"): the 32-epoch student of fold 0 taught by the 32-epoch teacher,
# against its 32-epoch twin, which is that teacher itself (bf16, as it trained: needs a CPU with native bf16 or a GPU)
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e32s teachers=[unet_effnet_ds_e32] teacher_folds=[0] \
  cv_folds=[0] epochs=32 twin=unet_effnet_ds_e32 2>&1 | log kd_unet_e32s
# the 32-epoch UNet-DS teachers of folds 1 and 2 (for a 3-fold campaign at 32 epochs)
for fold in 1 2; do
  $PY train.py recipe=unet_effnet_ds fold=$fold epochs=32 name=unet_effnet_ds_e32 2>&1 | log unet_effnet_ds_e32_fold$fold
done
# session 8: the model shipped in sessions 8-12, the 32-epoch recipe on all 400 images with hard labels (KD did not
# pay at equal epochs); distill.py writes the TTA/cleanup choice (from the 32-epoch fold-0 OOF) into the file. It was
# shipped with export=weights/student.safetensors; here it stays in runs/final_e32/ (the 64-epoch file ships below)
$PY distill.py recipe=student_unet name=final_e32 kd_weight=0 epochs=32 teachers=[unet_effnet_ds_e32] \
  teacher_folds=[0] 2>&1 | log final_e32

# session 9 (README, Results): the shipped recipe cross-validated. OOF reports of the 16-epoch families and of the
# 32-epoch UNet-DS family beside the 16-epoch FPN (trains nothing; rebuilds OOF predictions from published teachers
# where runs/ lost them), the shipped file's post-processing scored on the held-out folds, OOF tables to commit
$PY distill.py --report-only recipe=student_unet name=report_e16 teachers=[unet_effnet_ds,fpn_effnet] \
  teacher_folds=[0,1,2] 2>&1 | log report_e16
$PY distill.py --report-only recipe=student_unet name=report_e32 teachers=[unet_effnet_ds_e32,fpn_effnet] \
  teacher_folds=[0,1,2] 2>&1 | log report_e32
$PY -m analysis.postprocessing runs/unet_effnet_ds_e32 --data "$DATA" --model runs/final_e32/student.safetensors \
  --json docs/results/shipped_postprocessing_e32_folds012.json 2>&1 | log postprocessing_e32
for fold in 1 2; do
  $PY -m analysis.oof_table runs/unet_effnet_ds_e32 --data "$DATA" --folds $fold \
    --out docs/results/unet_effnet_ds_e32_fold${fold}_oof_table.npz
done
# session 9, started at its end (resumes): the FPN family at the shipped schedule, fold 0, for the family gap and the
# two-family ensemble at 32 epochs
$PY train.py recipe=fpn_effnet fold=0 epochs=32 name=fpn_effnet_e32 2>&1 | log fpn_effnet_e32_fold0
# (README, "Distillation: every KD test"): the fold-1 teachers' ensemble, the teacher lead of the fold-1 KD test
$PY distill.py --report-only recipe=student_unet name=report_e16_fold1 teachers=[unet_effnet_ds,fpn_effnet] \
  teacher_folds=[1] 2>&1 | log report_e16_fold1

# session 10: the FPN family at the shipped schedule (fold 0 above; fold 2 left for a later session), its OOF
# tables, the reports of both 32-epoch families side by side (family gap; the two-family ensemble = the teacher
# lead a 32-epoch student would get), and the cleanup rule, now cross-fitted, scored on held-out folds
for fold in 1 2; do
  $PY train.py recipe=fpn_effnet fold=$fold epochs=32 name=fpn_effnet_e32 2>&1 | log fpn_effnet_e32_fold$fold
done
for fold in 0 1 2; do
  $PY -m analysis.oof_table runs/fpn_effnet_e32 --data "$DATA" --folds $fold \
    --out docs/results/fpn_effnet_e32_fold${fold}_oof_table.npz
done
$PY distill.py --report-only recipe=student_unet name=report_e32_f0 teachers=[unet_effnet_ds_e32,fpn_effnet_e32] \
  teacher_folds=[0] 2>&1 | log report_e32_f0
$PY distill.py --report-only recipe=student_unet name=report_e32_both_f01 teachers=[unet_effnet_ds_e32,fpn_effnet_e32] \
  teacher_folds=[0,1] 2>&1 | log report_e32_both_f01
$PY -m analysis.postprocessing runs/unet_effnet_ds_e32 --data "$DATA" --model runs/final_e32/student.safetensors \
  --json docs/results/shipped_postprocessing_e32_folds012_crossfit_rule.json 2>&1 | log postprocessing_e32_crossfit
# the shipped recipe at the masks' 512^2 resolution, same 256^2 crops (a training step costs the same), fold 0
$PY train.py recipe=unet_effnet_ds fold=0 epochs=32 image_size=512 name=unet_effnet_ds_e32_512 2>&1 \
  | log unet_effnet_ds_e32_512_fold0

# session 11: the FPN fold 2 at 32 epochs and its OOF table (session 10's loops above) finished; both 32-epoch
# families over folds 0-2 (the report also writes the teaching ensemble's per-image OOF table, for the bootstrap
# of its lead over the UNet-DS), then the 32-epoch UNet-DS student of fold 0 taught by both 32-epoch families,
# against its twin (the 32-epoch UNet-DS)
$PY distill.py --report-only recipe=student_unet name=report_e32_both teachers=[unet_effnet_ds_e32,fpn_effnet_e32] \
  teacher_folds=[0,1,2] 2>&1 | log report_e32_both
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e32b teachers=[unet_effnet_ds_e32,fpn_effnet_e32] \
  teacher_folds=[0] cv_folds=[0] epochs=32 twin=unet_effnet_ds_e32 2>&1 | log kd_unet_e32b
# session 11, started at its end (resumes): the shipped recipe for 64 epochs on fold 0 -- does the schedule still pay
# (the 32-epoch runs peaked at epochs 31, 32 and 30 of 32)? If it does, it also makes a stronger teacher.
$PY train.py recipe=unet_effnet_ds fold=0 epochs=64 name=unet_effnet_ds_e64 2>&1 | log unet_effnet_ds_e64_fold0
# session 12: that run's OOF table and its gain over 32 epochs (+2.14, beyond noise: adopted), then the final
# model of the 64-epoch recipe on all 400 images (hard labels; post-processing chosen on the 64-epoch fold-0 OOF)
$PY -m analysis.oof_table runs/unet_effnet_ds_e64 --data "$DATA" --folds 0 \
  --out docs/results/unet_effnet_ds_e64_fold0_oof_table.npz 2>&1 | log oof_table_unet_e64_f0
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold0_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold0_oof_table.npz 2>&1 | log bootstrap_e32_vs_e64_f0
# how the 64-epoch fold-0 model's score depends on the photo's size (held-out photos shrunk, inference's path)
$PY -m analysis.resolution runs/unet_effnet_ds_e64 --data "$DATA" --folds 0 --sizes 512 384 256 192 \
  --out docs/results/resolution_unet_effnet_ds_e64_fold0 2>&1 | log resolution_e64_f0
$PY distill.py recipe=student_unet name=final_e64 kd_weight=0 epochs=64 teachers=[unet_effnet_ds_e64] \
  teacher_folds=[0] 2>&1 | log final_e64
# session 13: ship it (the float16 export first failed on a BatchNorm variance beyond float16's range; model files
# keep BatchNorm statistics in float32 since, and the same command, re-run, exported the finished run), then the
# checks: 100 test masks, the regression images (tests/test_weights.py), the speed benchmark, and the file's cleanup
# thresholds scored on the 32-epoch recipe's OOF predictions of folds 0-2 (a proxy: no other fold has 64 epochs)
cp runs/final_e64/student.safetensors weights/student.safetensors
$PY inference.py --input "$DATA/test_images" --output predictions 2>&1 | log ship_e64_inference
$PY -m pytest -q -rA tests/test_weights.py -k regression 2>&1 | log ship_e64_regression  # prints the mIoU
$PY analysis/benchmark_inference.py --weights weights/student.safetensors --big 3 2>&1 | log ship_e64_benchmark
$PY -m analysis.postprocessing runs/unet_effnet_ds_e32 --data "$DATA" --model weights/student.safetensors \
  --json docs/results/shipped_e64_postprocessing_on_e32_folds012.json 2>&1 | log pp_e64_on_e32
# the strongest teacher lead for a 32-epoch student (+2.14): a 32-epoch UNet-DS student of fold 0 taught by the 64-epoch
# fold-0 model, against its 32-epoch twin; then the FPN family at the product schedule, fold 0
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64t teachers=[unet_effnet_ds_e64] teacher_folds=[0] \
  cv_folds=[0] epochs=32 twin=unet_effnet_ds_e32 2>&1 | log kd_unet_e64t
$PY train.py recipe=fpn_effnet fold=0 epochs=64 name=fpn_effnet_e64 2>&1 | log fpn_effnet_e64_fold0
$PY -m analysis.oof_table runs/fpn_effnet_e64 --data "$DATA" --folds 0 \
  --out docs/results/fpn_effnet_e64_fold0_oof_table.npz 2>&1 | log oof_table_fpn_e64_f0
$PY -m analysis.bootstrap --a docs/results/fpn_effnet_e64_fold0_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold0_oof_table.npz 2>&1 | log bootstrap_fpn_e64_vs_unet_e64_f0
$PY -m analysis.bootstrap --a docs/results/fpn_effnet_e32_fold0_oof_table.npz \
  --b docs/results/fpn_effnet_e64_fold0_oof_table.npz 2>&1 | log bootstrap_fpn_e32_vs_e64_f0
# the two families' ensemble at 64 epochs (OOF report only)
$PY distill.py --report-only recipe=student_unet teachers=[unet_effnet_ds_e64,fpn_effnet_e64] teacher_folds=[0] \
  name=report_e64 2>&1 | log report_e64
# session 14: the 64-epoch teacher's lead over the 16-epoch twin (+5.4) taught a 16-epoch student, with the
# cached soft labels and with online targets (the teacher run on each augmented batch; kd_targets=online)
fold0_vs_twin() {  # $1 a --cv-only run on fold 0: its OOF table, bootstrapped against its twin's ($2, default the 16-epoch one)
  $PY -m analysis.oof_table "runs/$1" --data "$DATA" --folds 0 \
    --out "docs/results/$1_fold0_oof_table.npz" 2>&1 | log "oof_table_$1"
  $PY -m analysis.bootstrap --a "docs/results/${2:-unet_effnet_ds}_fold0_oof_table.npz" \
    --b "docs/results/$1_fold0_oof_table.npz" 2>&1 | log "bootstrap_$1"
}
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64t16 teachers=[unet_effnet_ds_e64] teacher_folds=[0] \
  cv_folds=[0] twin=unet_effnet_ds precision=fp32 2>&1 | log kd_unet_e64t16
fold0_vs_twin kd_unet_e64t16
$PY -m analysis.bootstrap --a docs/results/kd_unet_e32t_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64t16_fold0_oof_table.npz 2>&1 | log bootstrap_kd_e32t_vs_e64t16
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64t16on teachers=[unet_effnet_ds_e64] teacher_folds=[0] \
  cv_folds=[0] twin=unet_effnet_ds precision=fp32 kd_targets=online 2>&1 | log kd_unet_e64t16on
fold0_vs_twin kd_unet_e64t16on
$PY -m analysis.bootstrap --a docs/results/kd_unet_e64t16_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64t16on_fold0_oof_table.npz 2>&1 | log bootstrap_kd_e64t16_cached_vs_online
# the same at an equal schedule: online targets from the two 16-epoch families of fold 0 (lead +0.05)
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e16on teachers=[fpn_effnet,unet_effnet_ds] teacher_folds=[0] \
  cv_folds=[0] precision=fp32 kd_targets=online 2>&1 | log kd_unet_e16on
fold0_vs_twin kd_unet_e16on
# the online student of the 64-epoch teacher again, now that padded pixels get no target (unfinished in session 14)
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64t16onv teachers=[unet_effnet_ds_e64] teacher_folds=[0] \
  cv_folds=[0] twin=unet_effnet_ds precision=fp32 kd_targets=online 2>&1 | log kd_unet_e64t16onv
fold0_vs_twin kd_unet_e64t16onv
$PY -m analysis.bootstrap --a docs/results/kd_unet_e64t16_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64t16onv_fold0_oof_table.npz 2>&1 | log bootstrap_kd_e64t16_cached_vs_onlinev
# (the seed-1 runs name the seed-0 folds file, as they ran, so that these commands resume them; on a machine without
# it the file is rebuilt from seed 0, the seed its name says; folds_seed=0 selects the same split)
# session 15: run-to-run noise of the 16-epoch twin (another seed, the same folds), then the 32-epoch online student of the 64-epoch teacher (the cached one, kd_unet_e64t, gained +0.52)
$PY train.py recipe=unet_effnet_ds fold=0 seed=1 folds_file=runs/folds/dsmlr-carparts-c8fe9fab-k5-s0.json \
  name=unet_effnet_ds_s1 precision=fp32 2>&1 | log unet_effnet_ds_s1
fold0_vs_twin unet_effnet_ds_s1
for r in kd_unet_e64t16on kd_unet_e64t16onv kd_unet_e64t16 kd_unet_e16on kd_unet_e32t; do   # the 16-epoch students against the second twin
  $PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_s1_fold0_oof_table.npz \
    --b "docs/results/${r}_fold0_oof_table.npz" 2>&1 | log "bootstrap_${r}_vs_twin_s1"
done
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64t32on teachers=[unet_effnet_ds_e64] teacher_folds=[0] \
  cv_folds=[0] epochs=32 twin=unet_effnet_ds_e32 kd_targets=online 2>&1 | log kd_unet_e64t32on
fold0_vs_twin kd_unet_e64t32on unet_effnet_ds_e32
$PY -m analysis.bootstrap --a docs/results/kd_unet_e64t_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64t32on_fold0_oof_table.npz 2>&1 | log bootstrap_kd_e64t32_cached_vs_online
# session 15: run-to-run noise of the 32-epoch twin (seed 1, the same split), and the 32-epoch students against it
$PY train.py recipe=unet_effnet_ds fold=0 epochs=32 seed=1 folds_file=runs/folds/dsmlr-carparts-c8fe9fab-k5-s0.json \
  name=unet_effnet_ds_e32_s1 2>&1 | log unet_effnet_ds_e32_s1
fold0_vs_twin unet_effnet_ds_e32_s1 unet_effnet_ds_e32
for r in kd_unet_e64t32on kd_unet_e64t kd_unet_e32b kd_unet_e32s; do
  $PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_s1_fold0_oof_table.npz \
    --b "docs/results/${r}_fold0_oof_table.npz" 2>&1 | log "bootstrap_${r}_vs_twin_e32_s1"
done
# session 16 (a new machine: runs/ was gone, so the 32-epoch twin's seed-1 run restarted): a second 64-epoch teacher
# of fold 0 (seed 1, the same split), published so that a later session can teach a 64-epoch student with it
$PY train.py recipe=unet_effnet_ds fold=0 epochs=64 seed=1 \
  folds_file=runs/folds/dsmlr-carparts-c8fe9fab-k5-s0.json name=unet_effnet_ds_e64_s1 2>&1 | log unet_effnet_ds_e64_s1
fold0_vs_twin unet_effnet_ds_e64_s1 unet_effnet_ds_e64
$PY distill.py --publish runs/unet_effnet_ds_e64_s1/fold0
# the 32-epoch online student again with this teacher, seed 1: its twin is the seed-1 32-epoch run (the same seed and
# schedule), a replicate of kd_unet_e64t32on (+1.26 / +1.76 over the two 32-epoch twins)
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64s1t32on teachers=[unet_effnet_ds_e64_s1] teacher_folds=[0] \
  cv_folds=[0] epochs=32 seed=1 folds_seed=0 twin=unet_effnet_ds_e32_s1 kd_targets=online 2>&1 | log kd_unet_e64s1t32on
fold0_vs_twin kd_unet_e64s1t32on unet_effnet_ds_e32_s1
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64s1t32on_fold0_oof_table.npz 2>&1 | log bootstrap_kd_unet_e64s1t32on_vs_e32_s0
$PY -m analysis.bootstrap --a docs/results/kd_unet_e64t32on_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64s1t32on_fold0_oof_table.npz 2>&1 | log bootstrap_kd_unet_e64t32on_vs_e64s1t32on
# the 64-epoch student of fold 0 taught online by it; seed 1 like the teacher, whose run is then the twin
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64s1t64on teachers=[unet_effnet_ds_e64_s1] teacher_folds=[0] \
  cv_folds=[0] epochs=64 seed=1 folds_seed=0 twin=unet_effnet_ds_e64_s1 kd_targets=online 2>&1 | log kd_unet_e64s1t64on
fold0_vs_twin kd_unet_e64s1t64on unet_effnet_ds_e64_s1
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e64_fold0_oof_table.npz \
  --b docs/results/kd_unet_e64s1t64on_fold0_oof_table.npz 2>&1 | log bootstrap_kd_unet_e64s1t64on_vs_e64_s0
# session 18: the teacher and the 64-epoch student as a two-run ensemble of the 64-epoch recipe (a teacher lead?)
$PY distill.py --report-only recipe=student_unet name=report_e64pair teachers=[unet_effnet_ds_e64_s1,kd_unet_e64s1t64on] \
  teacher_folds=[0] 2>&1 | log report_e64pair
cp runs/report_e64pair/teaching_ensemble_oof_table.npz docs/results/report_e64pair_teaching_ensemble_oof_table.npz
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e64_s1_fold0_oof_table.npz \
  --b docs/results/report_e64pair_teaching_ensemble_oof_table.npz 2>&1 | log bootstrap_report_e64pair_vs_e64_s1
# the product's recipe (64 epochs) on a second fold: fold 1, against the 32-epoch run of fold 1
$PY train.py recipe=unet_effnet_ds fold=1 epochs=64 name=unet_effnet_ds_e64 2>&1 | log unet_effnet_ds_e64_fold1
$PY -m analysis.oof_table runs/unet_effnet_ds_e64 --data "$DATA" --folds 1 \
  --out docs/results/unet_effnet_ds_e64_fold1_oof_table.npz 2>&1 | log oof_table_unet_effnet_ds_e64_fold1
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold1_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold1_oof_table.npz 2>&1 | log bootstrap_unet_effnet_ds_e32_vs_e64_fold1
# session 18: one of tailgate / trunk per photo, measured on every fold-0 run's OOF predictions (README, "Exclusive parts")
$PY -m analysis.exclusive_parts runs/unet_effnet_ds_e64_s1 runs/kd_unet_e64s1t64on runs/unet_effnet_ds_e32 \
  runs/unet_effnet_ds_e32_s1 runs/kd_unet_e64s1t32on --data "$DATA" --group tailgate trunk \
  --json docs/results/exclusive_parts_fold0.json 2>&1 | log exclusive_parts_fold0
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold{0,1}_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold{0,1}_oof_table.npz 2>&1 | log bootstrap_unet_effnet_ds_e32_vs_e64_folds01
$PY -m analysis.exclusive_parts runs/unet_effnet_ds_e64 --folds 1 --data "$DATA" --group tailgate trunk \
  --json docs/results/exclusive_parts_e64_fold1.json 2>&1 | log exclusive_parts_e64_fold1
# the shipped file gains the exclusive group in its metadata (weights unchanged), measured on both 64-epoch folds
$PY -c "import torch; from workbench.models.modelfile import load_model, save_model
m, meta = load_model('weights/student.safetensors'); meta['exclusive'] = [['tailgate', 'trunk']]
save_model('weights/student.safetensors', m, meta, dtype=torch.float16)"
for r in unet_effnet_ds_e64_s1 unet_effnet_ds_e64; do
  $PY -m analysis.postprocessing "runs/$r" --data "$DATA" --model weights/student.safetensors \
    --json "docs/results/shipped_e64_postprocessing_on_$r.json" 2>&1 | log "postprocessing_shipped_on_$r"
done
$PY inference.py --input "$DATA/test_images" --output predictions 2>&1 | log predictions_s18
# fold 2 of the product's recipe at 64 epochs (started at the end of session 18; the same command resumes it)
$PY train.py recipe=unet_effnet_ds fold=2 epochs=64 name=unet_effnet_ds_e64 2>&1 | log unet_effnet_ds_e64_fold2
$PY -m analysis.oof_table runs/unet_effnet_ds_e64 --data "$DATA" --folds 2 \
  --out docs/results/unet_effnet_ds_e64_fold2_oof_table.npz 2>&1 | log oof_table_unet_effnet_ds_e64_fold2
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold{0,1,2}_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold{0,1,2}_oof_table.npz 2>&1 | log bootstrap_unet_effnet_ds_e32_vs_e64_folds012
$PY -m analysis.exclusive_parts runs/unet_effnet_ds_e64 --folds 2 --data "$DATA" --group tailgate trunk \
  --json docs/results/exclusive_parts_e64_fold2.json 2>&1 | log exclusive_parts_e64_fold2
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e32_fold2_oof_table.npz \
  --b docs/results/unet_effnet_ds_e64_fold2_oof_table.npz 2>&1 | log bootstrap_unet_effnet_ds_e32_vs_e64_fold2
# session 19: the shipped file's post-processing on the three 64-epoch folds, chosen again there (weights unchanged)
mkdir -p runs/unet_effnet_ds_e64_3f
ln -sfn ../unet_effnet_ds_e64_s1/fold0 runs/unet_effnet_ds_e64_3f/fold0
ln -sfn ../unet_effnet_ds_e64/fold1 runs/unet_effnet_ds_e64_3f/fold1
ln -sfn ../unet_effnet_ds_e64/fold2 runs/unet_effnet_ds_e64_3f/fold2
mkdir -p runs/ship19 && git show 49fa9e4:weights/student.safetensors > runs/ship19/before.safetensors  # the session-18 file
$PY -m analysis.postprocessing runs/unet_effnet_ds_e64_3f --data "$DATA" --model runs/ship19/before.safetensors \
  --json docs/results/shipped_s18_postprocessing_on_e64_folds012.json 2>&1 | log postprocessing_s18_on_e64_folds012
$PY distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64_s1/fold0 runs/unet_effnet_ds_e64/fold1 \
  runs/unet_effnet_ds_e64/fold2 2>&1 | log postprocess_s19
$PY -m analysis.postprocessing runs/unet_effnet_ds_e64_3f --data "$DATA" --model weights/student.safetensors \
  --json docs/results/rechosen_s19_postprocessing_on_e64_folds012.json 2>&1 | log postprocessing_s19_on_e64_folds012
$PY inference.py --input "$DATA/test_images" --output predictions 2>&1 | log predictions_s19
# session 20, on a lent GPU (one H200; docs/campaign2.md, "A GPU lent again"): .gpu/ prepared as written there, the
# three tracked model files moved out of the tree and the index for the call; device command, carry [".gpu"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD/.gpu/site; OUT=$OUT DEADLINE=480 bash campaign_gpu.sh
# its OOF tables are docs/results/gpu_session20/*_oof_table.npz; KD against the twin:
$PY -m analysis.bootstrap --a docs/results/gpu_session20/g_student_twin_fold0_oof_table.npz \
  --b docs/results/gpu_session20/g_student_fold0_oof_table.npz 2>&1 | log bootstrap_gpu20_twin_vs_student
# session 20 on the CPU: progressive resizing. The recipe's 64-epoch fold-0 model goes on for 8 epochs at 512² with
# 384² crops (lr 2.5e-4, no decoder multiplier); its control, the same 8 epochs at the recipe's 384²/256²
FT="epochs=8 lr=2.5e-4 decoder_lr_mult=1 val_every=2"
$PY train.py recipe=unet_effnet_ds fold=0 name=unet_effnet_ds_ft512 $FT image_size=512 crop_size=384 \
  init_from=runs/unet_effnet_ds_e64_s1/fold0/model.safetensors 2>&1 | log ft512_fold0
$PY train.py recipe=unet_effnet_ds fold=0 name=unet_effnet_ds_ft384 $FT \
  init_from=runs/unet_effnet_ds_e64_s1/fold0/model.safetensors 2>&1 | log ft384_fold0
for r in unet_effnet_ds_ft512 unet_effnet_ds_ft384; do
  $PY -m analysis.oof_table runs/$r --data "$DATA" --folds 0 --out docs/results/${r}_fold0_oof_table.npz 2>&1 | log oof_table_${r}_fold0
done
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e64_s1_fold0_oof_table.npz \
  --b docs/results/unet_effnet_ds_ft512_fold0_oof_table.npz 2>&1 | log bootstrap_e64_vs_ft512_fold0
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_ft384_fold0_oof_table.npz \
  --b docs/results/unet_effnet_ds_ft512_fold0_oof_table.npz 2>&1 | log bootstrap_ft384_vs_ft512_fold0
# folds 1 and 2 the same way (from the seed-0 64-epoch runs of those folds)
for f in 1 2; do
  $PY train.py recipe=unet_effnet_ds fold=$f name=unet_effnet_ds_ft512 $FT image_size=512 crop_size=384 \
    init_from=runs/unet_effnet_ds_e64/fold$f/model.safetensors 2>&1 | log ft512_fold$f
done
for f in 1 2; do
  $PY -m analysis.oof_table runs/unet_effnet_ds_ft512 --data "$DATA" --folds $f \
    --out docs/results/unet_effnet_ds_ft512_fold${f}_oof_table.npz 2>&1 | log oof_table_ft512_fold$f
done
$PY -m analysis.bootstrap --a docs/results/unet_effnet_ds_e64_s1_fold0_oof_table.npz \
  docs/results/unet_effnet_ds_e64_fold1_oof_table.npz docs/results/unet_effnet_ds_e64_fold2_oof_table.npz \
  --b docs/results/unet_effnet_ds_ft512_fold{0,1,2}_oof_table.npz 2>&1 | log bootstrap_e64_vs_ft512_folds012
# the final model the same way, from the shipped 64-epoch file (started beside folds 1-2, stopped after 3 of 8 epochs
# when they did not confirm fold 0; the same command resumes it; it ships only if the three folds say so)
# $PY distill.py recipe=student_unet name=final_ft512 kd_weight=0 $FT image_size=512 crop_size=384 \
#   teachers=[unet_effnet_ds_ft512] teacher_folds=[0] init_from=weights/student.safetensors 2>&1 | log final_ft512
# session 21: a third replicate of the 32-epoch online-KD pair (seed 2): the twin, then the student taught online
# by the seed-1 64-epoch fold-0 teacher (replicates 1-2: kd_unet_e64t32on +1.26, kd_unet_e64s1t32on +0.84)
$PY train.py recipe=unet_effnet_ds fold=0 epochs=32 seed=2 folds_file=runs/folds/dsmlr-carparts-c8fe9fab-k5-s0.json \
  name=unet_effnet_ds_e32_s2 2>&1 | log unet_effnet_ds_e32_s2
fold0_vs_twin unet_effnet_ds_e32_s2 unet_effnet_ds_e32
$PY distill.py --cv-only recipe=student_unet name=kd_unet_e64s1t32on_s2 teachers=[unet_effnet_ds_e64_s1] teacher_folds=[0] \
  cv_folds=[0] epochs=32 seed=2 folds_seed=0 twin=unet_effnet_ds_e32_s2 kd_targets=online 2>&1 | log kd_unet_e64s1t32on_s2
fold0_vs_twin kd_unet_e64s1t32on_s2 unet_effnet_ds_e32_s2
# session 21 (end): the whole 64-epoch schedule at 512² with 384² crops on fold 0, the unmeasured candidate for a better
# product model (progressive resizing, its short form, was rejected in session 20); about 3 h on this CPU
$PY train.py recipe=unet_effnet_ds fold=0 epochs=64 image_size=512 crop_size=384 val_every=4 \
  folds_file=runs/folds/dsmlr-carparts-c8fe9fab-k5-s0.json name=unet_effnet_ds_e64_512 2>&1 | log unet_effnet_ds_e64_512
fold0_vs_twin unet_effnet_ds_e64_512 unet_effnet_ds_e64_s1
