#!/usr/bin/env bash
# Campaign 2's fold-0 distillation test on one GPU inside a fixed time budget (docs/campaign2.md, "A GPU lent for 15
# minutes"): a UNet-DS teacher trained about twice as long as its student, the student (KD from it) and the
# student's hard-label twin (same recipe, data and epochs), the final student on all 400 images taught
# by the same teacher, GPU inference timing. Everything at 512 px (crops of 384), bf16 autocast.
#
#   OUT=runs/gpu_out bash campaign_gpu.sh   # env: DATA SIZE CROP EPOCHS0 DEADLINE RESERVE VAL_EVERY WORKERS H2O_SEED EXTRA
#
# Epochs are fitted to the budget: the teacher starts with EPOCHS0 epochs; after its second epoch its
# epoch time sets E_T (about 2 E_S) and E_S, the most that leave time for the report, and the teacher
# resumes with epochs=E_T (checkpoints allow that change; at that point the cosine schedule's learning
# rate differs by < 1 % between any two E_T >= 12). Run from scratch, the same runs are the commands
# below with E_T and E_S written in. Results (metrics, reports, OOF tables, logs) end in
# $OUT/results.tgz, the student in $OUT/student.safetensors, fp16 copies of the fold-0 models beside it.
set -u
cd "$(dirname "$0")"
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_out}
DATA=${DATA:-.gpu/data/dsmlr-carparts}
SIZE=${SIZE:-512}
CROP=${CROP:-384}
E_T=${EPOCHS0:-40}
DEADLINE=${DEADLINE:-550}        # seconds after the start by which everything must be packed (a machine started in ~50 s in session 20)
RESERVE=${RESERVE:-150}          # seconds the students' start, the report and the inference timing need
VAL_EVERY=${VAL_EVERY:-4}
W=${WORKERS:-6}                  # DataLoader workers of the teacher; the two students get 1.5x, the twin half
WS=$(( W * 3 / 2 )); WT=$(( (W + 1) / 2 ))
EXTRA=${EXTRA:-}                 # more overrides for every run (smoke tests)
KD_TARGETS=${KD_TARGETS:-online} # online: the teacher runs on each augmented student batch (fold 0 on the CPU: +0.81, -0.06, +0.75 over cached)
S_COST=${S_COST:-2.5}            # a student epoch (3 processes at once, one on 400 images, online teacher) in teacher epochs
S_START=${S_START:-60}           # seconds a distill.py spends before its first epoch (the teaching ensemble's report, CPU
                                 # work). Session 20 measured 100-140 s on the H200 machine with the post-processing choice
                                 # in it; since session 21 the students skip it (postprocess=false) and phase C makes it
                                 # last, beside the GPU timing: distill.py --postprocess (docs/campaign2.md).
                                 # On this 2-core CPU at 384 px the skip took a report from 62.6 to 27.6 s (session 21)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT" runs/logs
LOG=runs/logs/gpu_campaign.log
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
left() { echo $(( T0 + DEADLINE - $(date +%s) )); }
pack() {  # small results only: no checkpoints, probabilities, caches or model files
  tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.npy' --exclude='cache' --exclude='*.safetensors' \
    runs/logs $(ls -d runs/g_* runs/h2o_seed 2>/dev/null) 2>/dev/null
}
COMMON="data=$DATA image_size=$SIZE crop_size=$CROP val_every=$VAL_EVERY threads=2 $EXTRA"
KD="recipe=student_unet teachers=[g_teacher] teacher_folds=[0] cv_folds=[0] kd_targets=$KD_TARGETS postprocess=false $COMMON"
say "device: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"

# ---- phase A: the teacher (and the h2o_seed baseline, its own recipe) -------------------------------
H2O=
if [ "${H2O_SEED:-0}" = 1 ]; then  # measured on this GPU in session 8 (OOF 14.11); off by default
  $PY train.py recipe=h2o_seed data="$DATA" threads=2 workers=2 $EXTRA > runs/logs/h2o_seed_fold0.log 2>&1 &
  H2O=$!
fi
$PY train.py recipe=unet_effnet_ds name=g_teacher fold=0 epochs="$E_T" $COMMON workers=$W > runs/logs/g_teacher.log 2>&1 &
TEACHER=$!
# wall seconds from the teacher's 1st to its 2nd epoch (its 2nd is not validated unless VAL_EVERY <= 2)
T_EPOCH=$($PY - "$TEACHER" runs/g_teacher/fold0 <<'EOF'
import json, sys, time
pid, run = int(sys.argv[1]), sys.argv[2]
t = {}
while len(t) < 2:
    try:
        n = len(json.load(open(f"{run}/metrics.json"))["history"])
    except (OSError, ValueError, KeyError):
        n = 0
    for k in (1, 2):
        if n >= k:
            t.setdefault(k, time.time())
    try:
        alive = open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] not in "ZX"
    except OSError:
        alive = False
    if not alive and len(t) < 2:
        print("FAIL")
        sys.exit()
    time.sleep(0.2)
print(f"{t[2] - t[1]:.2f}")
EOF
)
if [ "$T_EPOCH" = FAIL ]; then
  say "the teacher stopped early:"; tail -20 runs/logs/g_teacher.log; [ -n "$H2O" ] && kill $H2O 2>/dev/null; pack; exit 1
fi
# The students' epochs (3 processes, one of them on 400 images) are taken as S_COST teacher epochs, the
# validation every VAL_EVERY epochs as one more epoch each; E_T = 2 E_S.
E_S=$($PY -c "
t = $T_EPOCH * (1 + 1 / $VAL_EVERY)
print(max(2, min(60, int(($(left) - $RESERVE - $S_START - 20) / (2 * t + $S_COST * t)))))")
E_T=$(( 2 * E_S ))
say "teacher epoch $T_EPOCH s -> teacher epochs=$E_T, student and twin epochs=$E_S"
kill $TEACHER 2>/dev/null; wait $TEACHER 2>/dev/null
$PY train.py recipe=unet_effnet_ds name=g_teacher fold=0 epochs="$E_T" $COMMON workers=$W >> runs/logs/g_teacher.log 2>&1
say "teacher done: $(tail -3 runs/logs/g_teacher.log | head -1)"
[ -n "$H2O" ] && wait $H2O
pack

# ---- phase B: student, its twin and the final student at once ---------------------------------------
# the twin is what distill.py would train after the student (runs/g_student_twin/fold0, kd_weight=0);
# trained beside it (hard labels and no soft-label pass: it ends first), the student's distill.py finds it
# finished and does not train it again
FOLDS=$($PY -c "from workbench.models.modelfile import read_metadata as m; print(m('runs/g_teacher/fold0/model.safetensors')['folds_file'])")
$PY train.py $KD name=g_student_twin out=runs/g_student_twin/fold0 fold=0 kd_weight=0 epochs="$E_S" folds_file="$FOLDS" workers=$WT \
  > runs/logs/g_student_twin.log 2>&1 &
$PY distill.py --cv-only $KD name=g_student epochs="$E_S" workers=$WS > runs/logs/g_student_cv0.log 2>&1 &
$PY distill.py $KD name=g_student epochs="$E_S" workers=$WS > runs/logs/g_student_full.log 2>&1 &
while [ -n "$(jobs -rp)" ]; do
  if [ "$(left)" -lt 75 ]; then say "out of time: stopping the students"; kill $(jobs -rp) 2>/dev/null; break; fi
  sleep 1
done
wait
DONE=1
for r in runs/g_teacher/fold0 runs/g_student_twin/fold0 runs/g_student/fold0 runs/g_student/full; do
  [ -f "$r/done.json" ] || { say "NOT DONE: $r"; DONE=0; }
done
say "students ended"
pack

# ---- phase C: report and export; OOF tables; fp16 copies of the fold-0 models; GPU inference timing ---
mkdir -p runs/g_tables
for r in g_teacher g_student_twin g_student h2o_seed; do
  timeout $(( $(left) - 10 )) $PY -m analysis.oof_table "runs/$r" --data "$DATA" --folds 0 \
    --out "runs/g_tables/${r}_fold0_oof_table.npz" > "runs/logs/g_table_$r.log" 2>&1 &
done
if [ "$DONE" = 1 ]; then  # every run finished: this only evaluates and exports (flip TTA, no cleanup until chosen)
  timeout $(( $(left) - 35 )) $PY distill.py --cv $KD name=g_student epochs="$E_S" export="$OUT/student.safetensors" \
    > runs/logs/g_student_report.log 2>&1 && say "student exported" || say "report/export failed or out of time"
fi
for r in runs/g_teacher/fold0 runs/g_student_twin/fold0 runs/g_student/fold0; do
  [ -f "$r/done.json" ] && $PY distill.py --publish "$r" >> runs/logs/g_publish.log 2>&1
done
for f in weights/teachers/g_*/fold0.safetensors; do
  [ -f "$f" ] && cp "$f" "$OUT/$(echo "$f" | cut -d/ -f3)_fold0.safetensors"
done
if [ -f "$OUT/student.safetensors" ] && [ "$(left)" -gt 20 ]; then
  # the post-processing choice on the fold-0 student's OOF (CPU work, beside the GPU timing); the rewrite is
  # atomic, so a choice cut short by the deadline leaves the file with flip TTA and no cleanup
  timeout $(( $(left) - 12 )) $PY distill.py --postprocess "$OUT/student.safetensors" runs/g_student/fold0 \
    > runs/logs/g_student_postprocess.log 2>&1 &
  timeout $(( $(left) - 10 )) $PY inference.py --input "$DATA/test_images" --output runs/g_pred \
    --weights "$OUT/student.safetensors" --device cuda --benchmark > runs/logs/g_inference_cuda.log 2>&1
  say "GPU inference: $(tail -4 runs/logs/g_inference_cuda.log | tr '\n' ' ')"
fi
wait
say "end"
pack
