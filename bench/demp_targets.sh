#!/usr/bin/env bash
# DemP driven to parameter targets, against dense and random per-layer pruning at initialisation
# at the parameter count DemP reached, same recipe, steps and seed (issue: "DemP that prunes as
# asked"). Prints one table row per run; run directories go to $OUT (default bench/out/targets).
#   bench/demp_targets.sh mlp|vgg16|resnet18 [extra train flags...]
# Wall-clock (train_seconds) means something only on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
net=${1:?usage: bench/demp_targets.sh mlp|vgg16|resnet18 [flags]}
shift
OUT=${OUT:-bench/out/targets}/$net
TARGETS=${TARGETS:-0.1 0.25 0.05}
case $net in
  mlp) dense=recipes/fashion-mnist-mlp-dense.json demp=recipes/fashion-mnist-mlp-demp.json extra=(--epochs 20)
    info=(--model mlp --width 1 --mlp-widths 512,256) ;;
  vgg16) dense=recipes/fashion-mnist-vgg16-dense.json demp=recipes/fashion-mnist-vgg16-demp.json extra=()
    info=(--model vgg16 --width 0.25) ;;
  resnet18) dense=recipes/fashion-mnist-resnet18-dense.json demp=recipes/fashion-mnist-resnet18-demp.json extra=()
    info=(--model resnet18 --width 0.25) ;;
  *) echo "unknown network $net" >&2; exit 2 ;;
esac
B=build/demp
row() {  # row RUN_DIR LABEL
  python3 - "$1" "$2" "$OUT/dense" <<'PY'
import json, sys, os
s = json.load(open(os.path.join(sys.argv[1], "summary.json")))
d = os.path.join(sys.argv[3], "summary.json")
speed = ""
if os.path.exists(d) and sys.argv[1] != sys.argv[3]:
    speed = "%.2fx" % (json.load(open(d))["train_seconds"] / s["train_seconds"])
c = s.get("method_state", {}).get("controller", {})
print("%-16s | acc %.4f | best %.4f | params %6.2f%% | flops %6.2f%% | units %6.2f%% | %7.1f s | %6s | reached %s" % (
    sys.argv[2], s["test_accuracy"], s["best_test_accuracy"], 100 * s["params_final"] / s["params_initial"],
    100 * s["flops_final"] / s["flops_initial"], 100 * s["units_final"] / s["units_initial"],
    s["train_seconds"], speed, c.get("reached_step", "-")))
PY
}
run() {  # run NAME CONFIG flags...
  local name=$1 cfg=$2
  shift 2
  [ -f "$OUT/$name/summary.json" ] || $B train --config "$cfg" "${extra[@]}" --progress none --out "$OUT/$name" --overwrite "$@" > "$OUT/$name.log" 2>&1
  row "$OUT/$name" "$name"
}
mkdir -p "$OUT"
$B info "${info[@]}" --json > "$OUT/arch.json"
run dense "$dense" "$@"
for F in $TARGETS; do
  run "demp-$F" "$demp" --target-params "$F" "$@"
  # random per-layer pruning at initialisation at DemP's parameter count: the per-layer density
  # whose parameter count (computed from the architecture, as demp counts) is DemP's
  d=$(python3 - "$OUT/demp-$F/summary.json" "$OUT/arch.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); a = json.load(open(sys.argv[2]))
goal = s["params_final"]
def params(d):
    w = [g["width"] if not g["prunable"] else max(1, min(g["width"], round(d * g["initial"]))) for g in a["groups"]]
    n = 0
    for l in a["layers"]:
        k2 = l["kernel"] ** 2 if l["kind"] == "conv" else 1
        i, o = w[l["in_group"]] * l["in_block"], w[l["out_group"]]
        n += i * o * k2 + (o if l["bias"] else 0) + (2 * o if l["bn"] else 0)
    return n
lo, hi = 0.0, 1.0
for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if params(mid) < goal else (lo, mid)
print("%.5f" % hi)
PY
)
  run "random-$F" "$dense" --method random --density "$d" "$@"
done
