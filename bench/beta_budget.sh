#!/bin/bash
# How many training steps before β shows on procedural dSprites? One VAE per β (latent 10, width 1, 32x32,
# Bernoulli likelihood as the published dSprites figures use (a cross-entropy on the grey edges of the
# resized sprites), batch 64, Adam 1e-3, seed $SEED), trained to each
# number of epochs in $EPOCHS in turn (`train --resume RUN --epochs E` goes on where the last stopped), the
# β-VAE score and MIG taken after each (1,000 / 500 points, fresh renders from independent factors).
# The runs of $RUNS (LOSS:BETA, the loss of `train --loss`) go side by side, one thread each. An epoch is
# 16,000 images = 250 steps.
#
#   EPOCHS="2 6 15 30" bash bench/beta_budget.sh        # ~30 minutes on 2 cores
#   RUNS="beta:1 tcvae:6" EPOCHS="30 60 120" SEED=1 WORK=/tmp/bb1 bash bench/beta_budget.sh
set -u
cd "$(dirname "$0")/.."
W=${WORK:-/tmp/facevae-bench-beta-budget}; mkdir -p "$W"
F=".venv/bin/python -m facevae"
[ -f "$W/ds/splits/random.npy" ] || { $F data dsprites "$W/ds" --n 20000 >/dev/null 2>&1
                                     $F data split "$W/ds" --strategy random >/dev/null; }
run() {  # loss beta
  local name=$1$2
  for e in ${EPOCHS:-2 6 15 30}; do
    if [ -d "$W/$name/checkpoints" ]; then
      OMP_NUM_THREADS=1 $F train --resume "$W/$name" --epochs "$e" --no-progress > "$W/$name.e$e.log" 2>&1
    else
      OMP_NUM_THREADS=1 $F train --run-dir "$W/$name" --data "$W/ds" --split random --model vae --latent-dim 10 \
        --width 1 --image-size 32 --likelihood bernoulli --loss "$1" --beta "$2" --batch-size 64 --lr 1e-3 --patience 0 \
        --eval-k 8 --eval-batches 2 --no-progress --epochs "$e" --seed "${SEED:-0}" > "$W/$name.e$e.log" 2>&1
    fi
    if ! OMP_NUM_THREADS=1 $F metrics "$W/$name" --metrics beta_vae,mig --n 1000 --n-eval 500 --json \
         > "$W/$name.e$e.json" 2> "$W/$name.e$e.err"; then  # a run that failed or was killed has no model
      echo "| $name | (no scores after $e epochs: $(tail -n 1 "$W/$name.e$e.err"); see $W/$name.e$e.log) |"
      return
    fi
    .venv/bin/python - "$W/$name" "$W/$name.e$e.json" <<'PY'
import json, sys
run = json.load(open(f"{sys.argv[1]}/metrics.json"))
scores = json.load(open(sys.argv[2]))["scores"]
print(f"| {sys.argv[1].rsplit('/', 1)[-1]} | {run['global_step']} | {scores['beta_vae_eval']:.3f} | {scores['mig']:.3f} | "
      f"{run['test']['test_kl']:.1f} | {run['test']['test_recon']:.1f} |", flush=True)
PY
  done
}
echo "| run | steps | β-VAE score (eval) | MIG | test KL (nats) | test recon (nats) |"
echo "|---|---:|---:|---:|---:|---:|"
for r in ${RUNS:-beta:1 beta:8}; do run "${r%%:*}" "${r##*:}" & done
wait
