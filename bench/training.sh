#!/usr/bin/env bash
# Issue 4's runs on the H200, after `make install`, one run per call so each fits a device
# command: bench/training.sh seed | adding-100 | adding-200 | adding-400 | larger-than-memory
# Logs (a plain line per epoch) and loss curves go to ${OUT:-out}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
run=${1:?which run: seed, adding-100, adding-200, adding-400 or larger-than-memory}
train() { timeout "${LIMIT:-540}" .venv/bin/lstmgen train "$@" --data "$OUT/data" --plot "$OUT/$run.png" 2>&1 \
            | grep -v '%|' | tee "$OUT/$run.log"; }
adding() {  # time-to-solve at T=$1 with $2 training sequences, against torch.nn.LSTM (cuDNN)
  train specs/adding.toml --task adding --steps "$1" --samples "$2" --test-samples 5000 --batch-size 128 \
        --optimizer adam --lr 1e-3 --clip 1.0 --epochs "${EPOCHS:-10}" --target-test-loss 0.01 --compare-torch; }

case $run in
  seed) train specs/seed.toml --task zeros --samples 300 --epochs 200 --batch-size 300 --lr 0.1 --compare-torch ;;
  adding-100) adding 100 100000 ;;
  adding-200) adding 200 100000 ;;
  adding-400) adding 400 50000 ;;
  # 2,000,000 sequences of 100 steps: 1.5 GiB on disk against a 256 MiB GPU memory budget.
  larger-than-memory) train specs/adding.toml --task adding --steps 100 --samples 2000000 --batch-size 256 \
                        --optimizer adam --lr 1e-3 --clip 1.0 --epochs 1 --memory-limit-mib 256 ;;
  *) echo "unknown run $run"; exit 2 ;;
esac
