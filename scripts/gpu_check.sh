#!/usr/bin/env bash
# What a lent GPU machine runs (README, "GPU"): the interleaved size table on CUDA against PyTorch
# eager on the same card, then emoji-base DiT training on the GPU (two learning rates side by side),
# exported to f16 for shipping. Built here, carried there:
#
#   scripts/build_cuda.sh bench train && cargo build --release --example export
#   mkdir -p .gpu && for b in bench train; do strip -o .gpu/$b target-cuda/release/examples/$b; done
#   strip -o .gpu/export target/release/examples/export && xz -T2 -f .gpu/*
#   # on the device (carry .gpu):  bash scripts/gpu_check.sh .gpu "$OUT"
#
# Outputs in OUT: bench-sizes.{md,json}, gpu.txt, small.tgz (logs, loss curves, cards), and the
# f16 checkpoints A-ema, A-weak, B-ema (.safetensors, cards embedded).
set -u
BIN=$(realpath "$1"); OUT=$2; TRAIN_S=${TRAIN_S:-200}
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }   # paths compiled in (CARGO_MANIFEST_DIR)
for f in "$BIN"/*.xz; do xz -d -f "$f"; done; chmod +x "$BIN"/*
for p in $(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))'); do
  for d in "$p"/cu13/lib "$p"/*/lib; do [ -d "$d" ] && LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done
done
export LD_LIBRARY_PATH
mkdir -p /tmp/logs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
nproc >> "$OUT/gpu.txt"
echo "== size table"
timeout 150 "$BIN/bench" --config "${BENCH_CONFIGS:-shipped,emoji-base,DiT-S/2,DiT-B/2@32,DiT-XL/2@16,DiT-XL/2@64}" \
  --rounds 5 --report --out "$OUT" 2>/tmp/logs/bench.err; tail -3 /tmp/logs/bench.err
echo "== training probe"
cd /tmp
"$BIN/train" --preset emoji-base --steps 30 --batch-size 256 --checkpoint-every 1000 --out /tmp/probe > /tmp/logs/probe.json 2>/tmp/logs/probe.err
tail -2 /tmp/logs/probe.err
SPS=$(python3 -c "import json; print(json.load(open('/tmp/logs/probe.json'))['s_per_step'])") || exit 1
STEPS=$(python3 -c "print(max(500, int($TRAIN_S / ($SPS * 1.3)) // 500 * 500))")
echo "probe: $SPS s/step at batch 256 -> $STEPS steps"
run() { # name lr
  timeout $((TRAIN_S + 60)) "$BIN/train" --preset emoji-base --steps "$STEPS" --batch-size 256 --lr "$2" \
    --checkpoint-every 250 --out "/tmp/$1" > "/tmp/logs/$1.json" 2> "/tmp/logs/$1.err"
}
run A 5e-4 & run B 2.5e-4 & wait
for r in A B; do tail -c 300 /tmp/logs/$r.err; cat /tmp/logs/$r.json; cp /tmp/$r/loss.csv /tmp/logs/$r-loss.csv; cp /tmp/$r/run.json /tmp/logs/$r-run.json; done
"$BIN/export" --run /tmp/A --to "$OUT/A-ema.safetensors" && "$BIN/export" --run /tmp/A --which weak --to "$OUT/A-weak.safetensors"
"$BIN/export" --run /tmp/B --to "$OUT/B-ema.safetensors"
mv "$OUT"/*.json /tmp/logs/ 2>/dev/null; cp "$OUT"/bench-sizes.md /tmp/logs/ 2>/dev/null
tar czf "$OUT/small.tgz" -C /tmp logs
ls -la "$OUT"
