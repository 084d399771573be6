#!/usr/bin/env bash
# The GPU figures in one go, in at most ~8 minutes on one H100: run it whenever a GPU is lent (DEVELOPERS.md).
#
#   bash bench/gpu.sh                       # on a CUDA machine
#   DEVICE=cpu QUICK=1 bash bench/gpu.sh    # a dry run of this script on CPU (tiny sizes), to check it works
#
# Steps, each under its own time limit (a step that fails or runs out still leaves the others' figures):
#   tests    the trainer / LoRA / equivalence tests (they pin the math the GPU run relies on)
#   batched  bench/bench_batched.py: qwen0.5b-random, 200 personas, batched trainer vs sequential PEFT
#   methods  the SmolLM2 all-methods run on the simulator's defaults, and its README table
# Writes bench/results/gpu-<UTC stamp>.json: the card, torch and CUDA versions, per step the exit code, wall
# seconds and output tail, and the figures parsed from the outputs; prints the file's path last.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
mkdir -p bench/results
out=bench/results/gpu-$stamp.json
METHODS=base,unified,per_persona,hybrid,cluster,merge:ab_mean,merge:exact,merge:svd,merge:ties,merge:dare_ties,prompted,unified+profile,rag,unified+rag,routed
if [ "$QUICK" = 1 ]; then
  BATCHED=(--model tiny-random --personas 4)
  RUN=(--model tiny-random --data sim:personas=3,train_per_persona=2,val_per_persona=1,test_per_persona=1 --epochs 1 --max-new-tokens 4)
  LIMITS=(300 120 300)
else
  BATCHED=(--model qwen0.5b-random --personas 200)
  RUN=(--model smollm2-135m --data sim:personas=8)
  LIMITS=(60 180 240)
fi

step() {  # name limit command...: output in $work/<name>.log, "<name> <rc> <seconds>" in $work/steps.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (at most ${limit} s): $*"
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))")" >> "$work/steps.txt"
  tail -n 3 "$work/$name.log"
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi") \
  > "$work/card.txt"
step tests "${LIMITS[0]}" python3 -m pytest -q -x tests/test_train.py tests/test_equivalence.py
step batched "${LIMITS[1]}" python3 bench/bench_batched.py "${BATCHED[@]}" --device "$DEVICE"
step methods "${LIMITS[2]}" python3 -m engine run "${RUN[@]}" --methods "$METHODS" --device "$DEVICE" \
  --store "$work/store.duckdb"
python3 bench/readme_table.py --store "$work/store.duckdb" > "$work/table.md" 2>&1 || true

python3 - "$work" "$out" "$DEVICE" <<'EOF'
import json, re, sys
from pathlib import Path
work, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
import torch
result = {"device": device, "card": (work / "card.txt").read_text().strip(), "torch": torch.__version__,
          "cuda": torch.version.cuda, "steps": {}, "figures": {}}
for line in (work / "steps.txt").read_text().splitlines():
    name, rc, seconds = line.split()
    log = (work / f"{name}.log").read_text(errors="replace")
    result["steps"][name] = {"exit_code": int(rc), "seconds": float(seconds), "timed_out": rc in ("124", "137"),
                             "output_tail": log[-4000:]}
batched = (work / "batched.log").read_text(errors="replace")
for label, pattern in {"batched_tokens_per_s": r"batched trainer:\s+[\d.]+ s\s+([\d.]+) tokens/s",
                       "batched_seconds": r"batched trainer:\s+([\d.]+) s"}.items():
    m = re.search(pattern, batched)
    result["figures"][label] = float(m.group(1)) if m else None
result["figures"]["sequential_peft"] = re.findall(r"sequential PEFT, (\w+):\s+([\d.]+) s\s+([\d.]+) tokens/s.*?([\d.]+)x", batched)
methods = (work / "methods.log").read_text(errors="replace")
result["figures"]["methods_run"] = [l.strip() for l in methods.splitlines() if l.startswith("    ")]
table = work / "table.md"
result["figures"]["readme_table"] = table.read_text() if table.exists() else None
out.write_text(json.dumps(result, indent=1))
EOF
echo "$out"
