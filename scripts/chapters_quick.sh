#!/usr/bin/env bash
# Runs every book chapter's example in its CI-sized `--quick` mode (built with
# `cargo build --release --examples`), so a figure cannot silently stop being reproducible, then
# checks that `reproduce --train` samples AutoGuidance with the run's own weak checkpoint and
# records every weight file it read in summary.json. Prints the wall time of each.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/examples
for ex in $(ls examples/ch[0-9][0-9]_*.rs | xargs -n1 basename | sed 's/\.rs$//'); do
  flags="--quick"
  grep -q '"--quick"' "examples/$ex.rs" || flags=""
  start=$(date +%s)
  "$bin/$ex" $flags > "/tmp/$ex.quick.log" 2>&1 || { echo "FAILED: $ex $flags"; tail -20 "/tmp/$ex.quick.log"; exit 1; }
  echo "$ex $flags: $(( $(date +%s) - start )) s"
done
out=$(mktemp -d)
start=$(date +%s)
"$bin/reproduce" --train --train-steps 4 --samples 1 --steps 2 --guidance cfg,autoguidance --out "$out" > "$out/log" 2>&1 || { tail -20 "$out/log"; exit 1; }
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
s = json.load(open(out / "summary.json"))
roles = {w["role"]: pathlib.Path(w["path"]) for w in s["weights"]}
assert roles["main"] == out / "train" / "ema.safetensors", roles
assert roles["weak"] == out / "train" / "weak.safetensors", roles
assert all(len(w["sha256"]) == 64 for w in s["weights"])
PY
echo "reproduce --train (own weak checkpoint in summary.json): $(( $(date +%s) - start )) s"
