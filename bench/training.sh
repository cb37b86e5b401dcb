#!/usr/bin/env bash
# Issue 4's runs on the H200, after `make install`; several runs per call as fits a device command:
#   bench/training.sh seed adding-100 adding-200 adding-400 larger-than-memory
# Logs (a plain line per epoch) and loss curves go to ${OUT:-out}; the data sets to ${DATA:-/tmp/lstmgen-data}
# (kept out of $OUT: they are large). LIMIT_<run> (seconds) bounds each run, default 540.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
DATA=${DATA:-/tmp/lstmgen-data}
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
train() { local limit_name="LIMIT_${run//-/_}"
          # The bar redraws with carriage returns: split them into lines and drop the bar's, so
          # that the per-epoch lines it prints between redraws stay in the log.
          timeout "${!limit_name:-540}" .venv/bin/lstmgen train "$@" --data "$DATA" --plot "$OUT/$run.png" 2>&1 \
            | tr '\r' '\n' | grep -v '%|' > "$OUT/$run.log"; tail -n 6 "$OUT/$run.log"; }
# Time-to-solve at T=$1, against torch.nn.LSTM (cuDNN) with the same weights, data and batch order.
# Epochs of 25,600 sequences (200 steps of 128), so the test loss is checked every 200 steps.
adding() {
  train specs/adding.toml --task adding --steps "$1" --samples 25600 --test-samples 5000 --batch-size 128 \
        --optimizer adam --lr 1e-3 --clip 1.0 --epochs "$2" --target-test-loss 0.01 --compare-torch; }

for run in "${@:?which runs: seed, adding-100, adding-200, adding-400, larger-than-memory}"; do
  echo "== $run"
  case $run in
    seed) train specs/seed.toml --task zeros --samples 300 --epochs 200 --batch-size 300 --lr 0.1 --compare-torch ;;
    adding-100) adding 100 40 ;;
    adding-200) adding 200 60 ;;
    adding-400) adding 400 80 ;;
    # 2,000,000 sequences of 100 steps: 1.5 GiB on disk against a 256 MiB GPU memory budget.
    larger-than-memory) train specs/adding.toml --task adding --steps 100 --samples 2000000 --batch-size 256 \
                          --optimizer adam --lr 1e-3 --clip 1.0 --epochs 1 --memory-limit-mib 256 ;;
    *) echo "unknown run $run"; exit 2 ;;
  esac
done
