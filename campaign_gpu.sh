#!/usr/bin/env bash
# Campaign 2 on one GPU inside a fixed time budget (README, "Campaign 2 on a GPU"): 3 folds of each
# teacher family, the h2o_seed baseline, the student cross-validated on those folds against its
# hard-label twin (the UNet-DS teacher of the fold: same recipe, data and epochs), the final student on
# all 400 images, GPU inference timing. Everything runs at 512 px (crops of 384) in bf16 autocast.
#
#   OUT=runs/gpu_out bash campaign_gpu.sh        # env: DATA SIZE CROP EPOCHS0 DEADLINE EXTRA TEACHER_WORKERS STUDENT_WORKERS
#
# The epochs are fitted to the budget: every teacher starts with EPOCHS0 epochs; after their second
# epoch the slowest one's epoch time sets E = the most epochs that leave time for the students (same
# E: the twin rule) and the report, and the teachers resume with epochs=E (a change checkpoints allow;
# at that point the cosine schedule's learning rate differs by < 1 % between any two E >= 12). The
# same runs from scratch are: python train.py recipe=unet_effnet_ds name=g_unet_ds fold=K epochs=E ...
# (the commands below with EPOCHS0=E). Results (metrics, reports, OOF tables, logs) end in
# $OUT/results.tgz, the student in $OUT/student.safetensors, the fold students and twins (fp16) beside it.
set -u
cd "$(dirname "$0")"
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_out}
DATA=${DATA:-.gpu/data/dsmlr-carparts}
SIZE=${SIZE:-512}
CROP=${CROP:-384}
E=${EPOCHS0:-40}
DEADLINE=${DEADLINE:-550}        # seconds after the start by which everything must be packed
EXTRA=${EXTRA:-}                 # more overrides for every run (smoke tests: max_steps=2 ...)
TW=${TEACHER_WORKERS:-2}
SW=${STUDENT_WORKERS:-3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT" runs/logs
LOG=runs/logs/gpu_campaign.log
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
left() { echo $(( T0 + DEADLINE - $(date +%s) )); }
pack() {  # small results only: no checkpoints, probabilities, caches or model files
  tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.npy' --exclude='cache' --exclude='*.safetensors' \
    runs/logs $(ls -d runs/g_* runs/h2o_seed weights/teachers/g_* 2>/dev/null) 2>/dev/null
}
COMMON="data=$DATA image_size=$SIZE crop_size=$CROP threads=2 $EXTRA"
TEACHERS="teachers=[g_unet_ds,g_fpn] teacher_folds=[0,1,2]"
STUDENT="recipe=student_unet name=g_student $TEACHERS $COMMON workers=$SW"

say "device: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
teacher() {  # recipe name fold epochs
  $PY train.py recipe="$1" name="$2" fold="$3" epochs="$4" $COMMON workers=$TW >> "runs/logs/$2_fold$3.log" 2>&1 &
  echo $!
}

# ---- phase A: six teachers (and the h2o_seed baseline, its own recipe) at once ----------------------
$PY train.py recipe=h2o_seed data="$DATA" threads=2 workers=$TW $EXTRA > runs/logs/h2o_seed_fold0.log 2>&1 &
start_teachers() {
  PIDS=()
  for f in 0 1 2; do
    PIDS+=("$(teacher unet_effnet_ds g_unet_ds $f "$1")" "$(teacher fpn_effnet g_fpn $f "$1")")
  done
}
start_teachers "$E"
say "teachers started with epochs=$E: pids ${PIDS[*]}"
RUNS="runs/g_unet_ds/fold0 runs/g_fpn/fold0 runs/g_unet_ds/fold1 runs/g_fpn/fold1 runs/g_unet_ds/fold2 runs/g_fpn/fold2"
# seconds per epoch of the slowest teacher (wall time from its 1st to its 2nd epoch) and the CPU
# seconds of one student training image (augmenting 19 soft-label channels is the students' CPU cost)
read -r T_EPOCH T_SOFT < <($PY - "${PIDS[*]}" $RUNS <<'EOF2'
import json, sys, time
import numpy as np
from workbench.data.augment import build_train_transform
pids, runs = [int(p) for p in sys.argv[1].split()], sys.argv[2:]
t1, t2 = {}, {}
def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] not in "ZX"
    except OSError:
        return False
while len(t2) < len(runs):
    for run in runs:
        try:
            n = len(json.load(open(f"{run}/metrics.json"))["history"])
        except (OSError, ValueError, KeyError):
            n = 0
        if n >= 1:
            t1.setdefault(run, time.time())
        if n >= 2:
            t2.setdefault(run, time.time())
    if not all(alive(p) for p in pids) and len(t2) < len(runs):
        print("FAIL 0")
        sys.exit()
    time.sleep(0.5)
# measured while the teachers train, as the students' workers will run: beside other processes
aug = build_train_transform("standard", list(range(19)), 384)
img, mask = np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8)
log_probs = np.full((512, 512, 19), -3.0, np.float16)
t = time.time()
for _ in range(8):
    aug(image=img, mask=mask, soft=np.exp(log_probs.astype(np.float32)))
t_soft = (time.time() - t) / 8
print(f"{max(t2[r] - t1[r] for r in runs):.2f} {t_soft:.4f}")
EOF2
)
if [ "$T_EPOCH" = FAIL ]; then
  say "a teacher stopped early:"; for f in runs/logs/g_*_fold*.log; do echo "== $f"; tail -15 "$f"; done
  kill "${PIDS[@]}" 2>/dev/null; wait; pack; exit 1
fi
# A student epoch (3 folds of 320 images + the final 400, at once) takes the longer of its GPU share
# (~0.7 of a teacher epoch: 4 processes instead of 7) and its augmentation on the cores left (~14).
T_STUDENT=$($PY -c "print(round(max(0.7 * $T_EPOCH, 1360 * $T_SOFT / ${CPU_CORES:-14}), 2))")
# Time left after the teachers' first two epochs, less what does not scale with epochs (restart, OOF
# export, the students' start and soft labels, report, OOF tables, inference timing).
RESERVE=${RESERVE:-300}
E_FIT=$($PY -c "print(max(2, min(100, int(($(left) - $RESERVE) / ($T_EPOCH + $T_STUDENT)))))")
say "slowest teacher epoch $T_EPOCH s, student image augmentation $T_SOFT s, student epoch ~$T_STUDENT s -> epochs=$E_FIT (started with $E)"
if [ "$E_FIT" != "$E" ]; then
  kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null
  E=$E_FIT; start_teachers "$E"
fi
# a small distillation on the same GPU meanwhile would only slow the teachers: the CPU tests cover it
wait
say "teachers done"
for r in $RUNS runs/h2o_seed/fold0; do
  [ -f "$r/done.json" ] || say "NOT DONE: $r"
done
pack

# ---- phase B: the student of each fold (twin: the fold's UNet-DS teacher) and the final student ------
for f in 0 1 2; do
  $PY distill.py --cv-only $STUDENT epochs="$E" cv_folds="[$f]" > "runs/logs/g_student_cv$f.log" 2>&1 &
done
$PY distill.py $STUDENT epochs="$E" > runs/logs/g_student_full.log 2>&1 &
while [ -n "$(jobs -rp)" ]; do
  if [ "$(left)" -lt 90 ]; then say "out of time: stopping the students"; kill $(jobs -rp) 2>/dev/null; break; fi
  sleep 2
done
wait
STUDENTS_DONE=1
for r in runs/g_student/fold0 runs/g_student/fold1 runs/g_student/fold2 runs/g_student/full; do
  [ -f "$r/done.json" ] || { say "NOT DONE: $r"; STUDENTS_DONE=0; }
done
say "students ended"
pack

# ---- phase C: report over all folds and export; OOF tables, teachers kept, GPU inference timing ------
mkdir -p runs/g_tables
for r in g_unet_ds g_fpn g_student; do
  timeout $(( $(left) - 15 )) $PY -m analysis.oof_table "runs/$r" --data "$DATA" --folds 0 1 2 --out "runs/g_tables/${r}_oof_table.npz" \
    > "runs/logs/g_table_$r.log" 2>&1 &
done
timeout $(( $(left) - 15 )) $PY -m analysis.oof_table runs/h2o_seed --data "$DATA" --folds 0 --out runs/g_tables/h2o_seed_oof_table.npz \
  > runs/logs/g_table_h2o_seed.log 2>&1 &
# back from the GPU (at most 8 files): the student, and fp16 copies of the cross-validated students and
# their twins (the UNet-DS teachers), to measure inference settings on their held-out folds on a CPU
for r in runs/g_unet_ds/fold{0,1,2} runs/g_student/fold{0,1,2}; do
  [ -f "$r/done.json" ] && $PY distill.py --publish "$r" >> runs/logs/g_publish.log 2>&1
done
for f in weights/teachers/g_*/fold*.safetensors; do
  [ -f "$f" ] && cp "$f" "$OUT/$(echo "$f" | cut -d/ -f3)_$(basename "$f")"
done
if [ "$STUDENTS_DONE" = 1 ]; then  # every run finished: this only evaluates, chooses TTA/cleanup, exports
  timeout $(( $(left) - 45 )) $PY distill.py --cv $STUDENT epochs="$E" export="$OUT/student.safetensors" \
    > runs/logs/g_student_report.log 2>&1 && say "student exported" || say "report/export failed or out of time"
fi
if [ -f "$OUT/student.safetensors" ] && [ "$(left)" -gt 30 ]; then
  timeout $(( $(left) - 20 )) $PY inference.py --input "$DATA/test_images" --output runs/g_pred \
    --weights "$OUT/student.safetensors" --device cuda --benchmark > runs/logs/g_inference_cuda.log 2>&1
  say "GPU inference: $(tail -4 runs/logs/g_inference_cuda.log | tr '\n' ' ')"
fi
wait
say "end"
pack
