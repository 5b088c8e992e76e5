#!/usr/bin/env bash
# Executes one generated notebook headless with the evcxr Jupyter kernel (a manual check, not CI:
# installing evcxr_jupyter compiles for ~15 min on 2 cores, and the kernel then compiles erg and
# its dependencies in debug mode, ~6 min, on the first cell).
#
#   bash scripts/run_notebook.sh notebooks/ch01_hopfield.ipynb   # → /tmp/<name>.executed.ipynb
set -euo pipefail
nb="${1:-notebooks/ch01_hopfield.ipynb}"
command -v evcxr_jupyter >/dev/null || cargo install evcxr_jupyter --locked
python3 -m pip install -q jupyter_client nbconvert nbclient ipykernel
evcxr_jupyter --install
out="/tmp/$(basename "$nb" .ipynb).executed.ipynb"
time jupyter nbconvert --to notebook --execute "$nb" --output "$out" \
  --ExecutePreprocessor.timeout=2400 --ExecutePreprocessor.kernel_name=rust
# Fail if a cell raised an error or wrote a plotting error; list what each cell produced.
python3 - "$out" <<'PY'
import json, sys
nb = json.load(open(sys.argv[1]))
bad = 0
for i, c in enumerate(x for x in nb["cells"] if x["cell_type"] == "code"):
    kinds = []
    for o in c.get("outputs", []):
        kinds += list(o.get("data", {})) or [o.get("name", o["output_type"])]
        text = "".join(o.get("text", ""))
        if o["output_type"] == "error" or "error" in text.lower() and o.get("name") == "stderr":
            bad += 1
            print(f"cell {i + 1}: {o.get('ename', '')} {text[:200]}")
    print(f"cell {i + 1}: {', '.join(kinds) or '-'}")
sys.exit(1 if bad else 0)
PY
