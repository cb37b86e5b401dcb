#!/usr/bin/env bash
# Issue 4's runs on the H200, after `make install`: the seed experiment, the adding problem at
# T = 100, 200, 400 with time-to-solve against torch.nn.LSTM (cuDNN), and training on a data
# set larger than a GPU memory budget. Logs and plots go to ${OUT:-out}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
train() { local name=$1; shift; echo "== $name"; timeout "${LIMIT:-240}" .venv/bin/lstmgen train "$@" --data "$OUT/data" \
            --plot "$OUT/$name.png" 2>&1 | grep -v '%|' | tee "$OUT/$name.log"; }

train seed specs/seed.toml --task zeros --samples 300 --epochs 200 --batch-size 300 --lr 0.1 --compare-torch
for steps in 100 200 400; do
  train "adding-$steps" specs/adding.toml --task adding --steps "$steps" --samples 200000 --test-samples 10000 \
        --batch-size 128 --optimizer adam --lr 1e-3 --clip 1.0 --epochs 10 --target-test-loss 0.01 --compare-torch
done
# 2,000,000 sequences of 100 steps: 1.5 GiB on disk against a 256 MiB GPU memory budget.
train larger-than-memory specs/adding.toml --task adding --steps 100 --samples 2000000 --batch-size 256 \
      --optimizer adam --lr 1e-3 --clip 1.0 --epochs 1 --memory-limit-mib 256
