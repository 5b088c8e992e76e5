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
#            shipped DiT's card (export --selection), so reproduce, table3 and ch08 use it; the
#            same for the text-to-image model (table1 --sweep over Tables 1 and 5's methods), so
#            table1 and t2i use it
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
t2i_ckpt=data/checkpoints/emoji-mmdit-base-ema.safetensors # erg::models::mmdit::t2i::SHIPPED_EMOJI_MMDIT
t2i_methods=none,cfg,apg,cads,pag,sag,cfg+seg,autoguidance,erg,erg+apg,erg+cads,cerg,ierg
mkdir -p results/regenerate
stage() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { local s; s=$(date +%s); "$@"; echo "[$(( $(date +%s) - s )) s] $*" | tee -a results/regenerate/times.txt; }

if stage select; then
  timed "$bin/sweep" --samples-per-class 10 --steps 25 --out results/sweep
  timed "$bin/export" --from "$ckpt" --selection results/sweep/selection.json --to "$ckpt"
  # 10 prompts × 1 sample per category (90 images) per setting and seed, as the DiT's 10 per class;
  # the table it also reports (seed 0 at that size) is not the book's
  timed "$bin/table1" --sweep --methods "$t2i_methods" --prompts-per-class 10 --samples-per-prompt 1 --seeds 0 --out results/sweep-t2i
  timed "$bin/export" --from "$t2i_ckpt" --selection results/sweep-t2i/selection_t2i.json --to "$t2i_ckpt"
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
