#!/usr/bin/env bash
# Executes the generated notebooks headless with the evcxr Jupyter kernel and fails if a cell
# errors. ERG_QUICK=1 (the default here) gives each chapter its CI-sized run, as `--quick` does.
#
#   bash scripts/run_notebook.sh                               # every notebook → /tmp/<name>.executed.ipynb
#   bash scripts/run_notebook.sh notebooks/ch01_hopfield.ipynb # one
#
# First run: installing evcxr_jupyter compiles for ~15 min on 2 cores; the first notebook then
# compiles erg and its dependencies (`:opt 2`) for ~6 min; evcxr's build cache (`:cache`, set
# below) makes the next notebooks reuse them. Wall times per notebook are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export ERG_QUICK="${ERG_QUICK:-1}"
command -v evcxr_jupyter >/dev/null || cargo install evcxr_jupyter --locked
python3 -c "import nbconvert, nbclient, jupyter_client" 2>/dev/null || python3 -m pip install -q jupyter_client nbconvert nbclient ipykernel
evcxr_jupyter --install >/dev/null
init="${XDG_CONFIG_HOME:-$HOME/.config}/evcxr/init.evcxr"
mkdir -p "$(dirname "$init")"
grep -q '^:cache' "$init" 2>/dev/null || echo ':cache 4000' >> "$init"
notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
summary=""
status=0
for nb in "${notebooks[@]}"; do
  out="/tmp/$(basename "$nb" .ipynb).executed.ipynb"
  start=$(date +%s)
  if ! jupyter nbconvert --to notebook --execute "$nb" --output "$out" \
      --ExecutePreprocessor.timeout=2400 --ExecutePreprocessor.kernel_name=rust > "/tmp/$(basename "$nb" .ipynb).nbconvert.log" 2>&1; then
    echo "FAILED to execute $nb:"; tail -30 "/tmp/$(basename "$nb" .ipynb).nbconvert.log"; status=1
    summary+="$nb: FAILED after $(( $(date +%s) - start )) s\n"
    continue
  fi
  # Fail if a cell raised an error or wrote an error to stderr; list what each cell produced.
  if ! python3 - "$out" <<'PY'
import json, sys
nb = json.load(open(sys.argv[1]))
bad = 0
for i, c in enumerate(x for x in nb["cells"] if x["cell_type"] == "code"):
    kinds = []
    for o in c.get("outputs", []):
        kinds += list(o.get("data", {})) or [o.get("name", o["output_type"])]
        text = "".join(o.get("text", ""))
        if o["output_type"] == "error" or ("error" in text.lower() and o.get("name") == "stderr"):
            bad += 1
            print(f"cell {i + 1}: {o.get('ename', '')} {text[:300]}")
    print(f"cell {i + 1}: {', '.join(kinds) or '-'}")
sys.exit(1 if bad else 0)
PY
  then status=1; summary+="$nb: cell errors\n"; continue; fi
  summary+="$nb: $(( $(date +%s) - start )) s\n"
done
printf "\nwall time per notebook:\n$summary"
exit $status
