#!/usr/bin/env bash
# What a lent GPU machine runs (README, "GPU"): the interleaved size table on CUDA against PyTorch
# eager on the same card, then emoji-base DiT training on the GPU (two learning rates side by side)
# exported to f16 for shipping, beside two wider classifiers (with and without mixup), all four
# processes sharing the card. Built here, carried there:
#
#   scripts/build_cuda.sh bench train train_classifier && cargo build --release --example export
#   mkdir -p .gpu && for b in bench train train_classifier; do strip -o .gpu/$b target-cuda/release/examples/$b; done
#   strip -o .gpu/export target/release/examples/export && xz -T2 -f .gpu/*
#   # on the device (carry .gpu):  bash scripts/gpu_check.sh .gpu "$OUT"
#
# Outputs in OUT: bench-sizes.md, small.tgz (logs, loss curves, cards, gpu.txt, bench JSON), the
# f16 checkpoints A-ema, A-weak, B-ema (.safetensors, cards embedded) and the classifiers C1, C2
# (their cards in small.tgz).
set -u
BIN=$(realpath "$1"); OUT=$2; TRAIN_S=${TRAIN_S:-280}
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
timeout 120 "$BIN/bench" --config "${BENCH_CONFIGS:-shipped,emoji-base,DiT-S/2,DiT-B/2@32,DiT-XL/2@16,DiT-XL/2@64}" \
  --rounds 5 --report --out "$OUT" 2>/tmp/logs/bench.err; tail -3 /tmp/logs/bench.err
echo "== training probes (two DiT runs at once, as A and B will run, beside a classifier)"
cd /tmp
probe() {
  "$BIN/train" --preset emoji-base --steps 40 --batch-size 256 --checkpoint-every 1000 --out "/tmp/probe$1" \
    > "/tmp/logs/probe$1.json" 2> "/tmp/logs/probe$1.err"
}
clf() { # name steps extra-args...
  local n=$1 s=$2; shift 2
  "$BIN/train_classifier" --widths 64,128,256 --batch-size 256 --steps "$s" "$@" --out "/tmp/$n.safetensors" \
    > "/tmp/logs/$n.txt" 2> "/tmp/logs/$n.err"
}
cprobe() { local a b c; a=$(date +%s.%N); clf cp1 20; b=$(date +%s.%N); clf cp2 120; c=$(date +%s.%N)
  python3 -c "print(max(1e-3, (($c - $b) - ($b - $a)) / 100))" > /tmp/logs/clf_sps; }
probe 1 & probe 2 & cprobe & wait
tail -2 /tmp/logs/probe1.err; cat /tmp/logs/cp2.txt
# Seconds per step from the loss log's clock, steps 10..40 (the first steps compile kernels).
SPS=$(python3 -c "
import csv
r = [max(float(x['elapsed_s']) for x in csv.DictReader(open(f'/tmp/probe{i}/loss.csv')) if int(x['step']) == s) for i in (1, 2) for s in (10, 40)]
print(max(r[1] - r[0], r[3] - r[2]) / 30)") || exit 1
STEPS=$(python3 -c "print(max(500, int($TRAIN_S / ($SPS * 1.25)) // 250 * 250))")
CSPS=$(cat /tmp/logs/clf_sps)
CSTEPS=$(python3 -c "print(min(20000, max(1000, int($TRAIN_S / ($CSPS * 1.6)) // 500 * 500)))")
echo "probe: DiT $SPS s/step at batch 256 (two runs sharing the card) -> $STEPS steps; classifier $CSPS s/step -> $CSTEPS steps"
run() { # name lr
  timeout $((TRAIN_S + 60)) "$BIN/train" --preset emoji-base --steps "$STEPS" --batch-size 256 --lr "$2" \
    --time-limit-minutes "$(python3 -c "print($TRAIN_S / 60)")" \
    --checkpoint-every 250 --out "/tmp/$1" > "/tmp/logs/$1.json" 2> "/tmp/logs/$1.err"
}
run A 5e-4 & run B 2.5e-4 &
(timeout $((TRAIN_S + 60)) bash -c "$(declare -f clf); BIN=$BIN; clf C1 $CSTEPS --mixup true") &
(timeout $((TRAIN_S + 60)) bash -c "$(declare -f clf); BIN=$BIN; clf C2 $CSTEPS --mixup false") &
wait
for r in A B; do tail -c 300 /tmp/logs/$r.err; cat /tmp/logs/$r.json; cp /tmp/$r/loss.csv /tmp/logs/$r-loss.csv; cp /tmp/$r/run.json /tmp/logs/$r-run.json; done
for c in C1 C2; do tail -c 200 /tmp/logs/$c.err; cat /tmp/logs/$c.txt; cp /tmp/$c.safetensors "$OUT/" && cp /tmp/$c.json /tmp/logs/; done
"$BIN/export" --run /tmp/A --to "$OUT/A-ema.safetensors" && "$BIN/export" --run /tmp/A --which weak --to "$OUT/A-weak.safetensors"
"$BIN/export" --run /tmp/B --to "$OUT/B-ema.safetensors"
mv "$OUT"/*.json "$OUT"/gpu.txt /tmp/logs/ 2>/dev/null; cp "$OUT"/bench-sizes.md /tmp/logs/ 2>/dev/null
tar czf "$OUT/small.tgz" -C /tmp logs
ls -la "$OUT"
