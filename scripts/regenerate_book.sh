#!/usr/bin/env bash
# Regenerates every number and figure of the book from the shipped checkpoints, in the order the
# results depend on each other. Every evaluation is cached in results/**/*.jsonl (keyed by the
# settings and the SHA-256 of every weight file), so an interrupted run resumes where it stopped
# and a rerun after new checkpoints recomputes only what they change.
#
#   bash scripts/regenerate_book.sh            # everything (hours on 2 CPU cores; see README)
#   STAGES="tables figures" bash scripts/regenerate_book.sh
#
# Stages:
#   select   sweep each method's grid on seeds 100–102 and store the mean-rank selection in the
#            shipped DiT's card (export --selection), so reproduce, table3 and ch08 use it
#   tables   Tables 3, 2 (with matched strength), 1, 5 (text-to-image) and ch08's 4 and 5, each
#            over seeds 0, 1, 2 (mean ± std)
#   figures  every chapter example in full, then the figures copied into chapters/figures/
# What stays manual: the chapters' prose and pasted tables, updated to what the new numbers show.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGES=${STAGES:-select tables figures}
cargo build --release --examples
bin=target/release/examples
ckpt=data/checkpoints/emoji-dit-ema.safetensors
mkdir -p results/regenerate
stage() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { local s; s=$(date +%s); "$@"; echo "[$(( $(date +%s) - s )) s] $*" | tee -a results/regenerate/times.txt; }

if stage select; then
  timed "$bin/sweep" --samples-per-class 10 --steps 25 --out results/sweep
  timed "$bin/export" --from "$ckpt" --selection results/sweep/selection.json --to "$ckpt"
fi
if stage tables; then
  timed "$bin/table3" --out results/tables --matched-strength
  timed "$bin/table3" --table 2 --out results/tables
  timed "$bin/table1" --out results/tables
  timed "$bin/table1" --table 5 --out results/tables
fi
if stage figures; then
  for ex in $(ls examples/ch[0-9][0-9]_*.rs | xargs -n1 basename | sed 's/\.rs$//'); do
    timed "$bin/$ex" > "results/regenerate/$ex.log"
  done
  python3 scripts/book_figures.py
fi
echo "done; times in results/regenerate/times.txt"
