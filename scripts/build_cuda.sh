#!/usr/bin/env bash
# Builds `--features cuda` binaries on a machine WITHOUT a CUDA toolkit or GPU (such as this
# project's CPU machines), for carrying to a GPU machine that has the NVIDIA driver and a CUDA 13
# PyTorch (whose pip wheels provide libcublas/libcurand/libcudart at run time).
#
#   scripts/build_cuda.sh [example ...]        # default: bench; binaries in target-cuda/release/examples/
#
# What it does (tested here: the `bench` example builds and links, 58 MB):
# 1. CUDA 13 compiler and headers from PyPI (`nvidia-cuda-nvcc` ships bin/nvcc; the cu12 wheel
#    does not), runtime/cuBLAS/cuRAND/NVRTC for headers and link-time libraries, into a venv;
# 2. unversioned .so links for the linker, and a libcuda.so stub (every cu* symbol cudarc binds,
#    soname libcuda.so.1) because cudarc links the driver API dynamically and no wheel ships it —
#    at run time the driver's real libcuda.so.1 is used;
# 3. the toolkit must not be newer than the GPU machine's driver: PTX from nvcc 13.5 (ISA 9.5) is
#    refused by driver 580 (CUDA 13.0) with CUDA_ERROR_UNSUPPORTED_PTX_VERSION (seen on the lent
#    H200), so CUDA_VERSION (default 13.0) pins nvcc, NVVM and headers, and CUDARC_CUDA_VERSION
#    (default 13000) picks cudarc's matching API; kernels are compiled to PTX for
#    CUDA_COMPUTE_CAP (90 = H100/H200).
# On the GPU machine: LD_LIBRARY_PATH=$(python -c 'import nvidia, os; print(list(nvidia.__path__)[0])')/cu13/lib
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_VERSION=${CUDA_VERSION:-13.0}
VENV=${CUDA_VENV:-/work/cudaenv-$CUDA_VERSION}
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q nvidia-curand \
  $(for p in cuda-nvcc nvvm cuda-crt cuda-runtime cuda-cccl cublas cuda-nvrtc; do echo "nvidia-$p==$CUDA_VERSION.*"; done)
N=$("$VENV/bin/python" -c 'import nvidia, os; print(list(nvidia.__path__)[0])')/cu13
CUDARC=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.10 2>/dev/null | head -1 || true)
if [ ! -e "$N/lib/libcuda.so" ]; then
  [ -n "$CUDARC" ] || cargo fetch
  CUDARC=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.10 | head -1)
  grep -oE "pub (unsafe )?fn cu[A-Z][A-Za-z0-9_]*\(" "$CUDARC/src/driver/sys/mod.rs" | sed -E 's/pub (unsafe )?fn //; s/\(//' | sort -u \
    | awk '{print "void " $1 "(void){}"}' > /tmp/libcuda_stub.c
  gcc -shared -fPIC -o "$N/lib/libcuda.so" -Wl,-soname,libcuda.so.1 /tmp/libcuda_stub.c
fi
for l in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do ln -sf "lib$l" "$N/lib/lib${l%%.so.*}.so"; done
# candle-kernels caches its PTX across toolkit changes (cudaforge): rebuild it when the version changes.
TARGET=${CARGO_TARGET_DIR:-target-cuda}
if [ "$(cat "$TARGET/.cuda-version" 2>/dev/null)" != "$CUDA_VERSION" ]; then
  rm -rf "$TARGET"/release/build/candle-kernels-* "$TARGET"/release/.fingerprint/candle-kernels-*
  mkdir -p "$TARGET" && echo "$CUDA_VERSION" > "$TARGET/.cuda-version"
fi
EXAMPLES=("${@:-bench}")
ARGS=()
for e in "${EXAMPLES[@]}"; do ARGS+=(--example "$e"); done
PATH="$N/bin:$PATH" CUDA_ROOT="$N" CUDA_PATH="$N" CUDA_TOOLKIT_ROOT_DIR="$N" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
  CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000} CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda} \
  cargo build --release --features cuda "${ARGS[@]}"
echo "built: ${EXAMPLES[*]} in ${CARGO_TARGET_DIR:-target-cuda}/release/examples/"
