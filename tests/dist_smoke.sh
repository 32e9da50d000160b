#!/usr/bin/env bash
# Data-parallel training over c10d/Gloo on loopback, through the CLI as users run it:
#  - demp train --nproc 2 runs, prunes at the same steps with the same widths on both ranks, ends
#    with bit-identical parameters on both ranks, and lands close to a 1-process run with the same
#    global batch;
#  - a run stopped with 2 ranks resumes with 1 (another world size);
#  - torchrun-style environment: a missing peer ends with a clear error within the timeout;
#  - a batch that does not split over the ranks is refused.
. "$(dirname "$0")/smoke_lib.sh"
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

BASE=(--model mlp --mlp-widths 64,32 --width 1.0 --train-limit 4096 --test-limit 1000 --batch-size 64
      --steps 128 --lr 0.02 --seed 5 --progress none --threads 1)
A=("${BASE[@]}" --method demp --lambda 0.05 --prune-every 16 --check-size 512)

# 2 ranks
"$DEMP" train "${A[@]}" --nproc 2 --out "$TMP/two" >"$TMP/two.out" 2>&1
rc=$?
[ $rc -eq 0 ] && ok || bad "nproc 2 exited $rc: $(tail -5 "$TMP/two.out")"
[ "$(json "$TMP/two/summary.json" '["world_size"]')" = 2 ] && ok || bad "world_size not 2"
[ "$(json "$TMP/two/summary.json" '["replicas_identical"]')" = True ] && ok || bad "replicas differ"
grep -q "replicas identical: yes" "$TMP/two.out" && ok || bad "rank 0 did not report identical replicas"
# rank 1 reports its own replica: same prune steps and final size as rank 0's run directory
steps0=$(json "$TMP/two/summary.json" '["prune_events"]' | python3 -c \
  "import ast,sys; print(','.join(str(e['step']) for e in ast.literal_eval(sys.stdin.read())))")
line1=$(grep "\[rank 1\] rank 1 | finished" "$TMP/two.out")
[ -n "$steps0" ] && ok || bad "no prune events with 2 ranks"
printf '%s' "$line1" | grep -q "prune steps \[${steps0}\]" && ok || bad "rank 1 pruned at other steps: $line1 vs $steps0"
printf '%s' "$line1" | grep -q "units $(json "$TMP/two/summary.json" '["units_final"]') |" && ok ||
  bad "rank 1 ended with other widths: $line1"
printf '%s' "$line1" | grep -q "replicas identical yes" && ok || bad "rank 1: $line1"
[ ! -e "$TMP/two/rank1" ] && [ "$(grep -c "data-parallel | 2 ranks (gloo)" "$TMP/two/log.txt")" = 1 ] && ok ||
  bad "log.txt should be written once, by rank 0"
b0=$(json "$TMP/two/summary.json" '["allreduce_bytes_per_step_initial"]')
b1=$(json "$TMP/two/summary.json" '["allreduce_bytes_per_step_final"]')
p0=$(json "$TMP/two/summary.json" '["params_initial"]')
p1=$(json "$TMP/two/summary.json" '["params_final"]')
[ "$b0" = $((4 * p0)) ] && [ "$b1" = $((4 * p1)) ] && ok ||
  bad "bytes all-reduced per step should be 4 x params: $b0/$p0, $b1/$p1"

# 1 process, same global batch: close
"$DEMP" train "${A[@]}" --out "$TMP/one" >"$TMP/one.out" 2>&1 && ok || bad "1-process run failed"
python3 - "$TMP/one/summary.json" "$TMP/two/summary.json" <<'EOF' && ok || bad "2 ranks far from 1 process"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
da = abs(a["test_accuracy"] - b["test_accuracy"])
du = abs(a["units_final"] - b["units_final"]) / a["units_initial"]
print(f"1 process: acc {a['test_accuracy']:.3f} units {a['units_final']}; 2 ranks: acc {b['test_accuracy']:.3f} units {b['units_final']}")
sys.exit(0 if da < 0.05 and du < 0.1 else 1)
EOF

# a baseline, distributed: its cut is rank 0's on every rank
"$DEMP" train "${BASE[@]}" --method slimming --density 0.5 --prune-at 32 --nproc 2 --out "$TMP/slim" >"$TMP/slim.out" 2>&1 &&
  grep -q "replicas identical: yes" "$TMP/slim.out" && grep -q "\[rank 1\] rank 1 | finished | units 48 |" "$TMP/slim.out" &&
  ok || bad "slimming with 2 ranks: $(tail -3 "$TMP/slim.out")"

# synchronised BatchNorm
"$DEMP" train "${A[@]}" --nproc 2 --sync-bn --out "$TMP/sbn" >"$TMP/sbn.out" 2>&1 &&
  grep -q "replicas identical: yes" "$TMP/sbn.out" && grep -q "BatchNorm statistics synchronised" "$TMP/sbn/log.txt" &&
  ok || bad "--sync-bn with 2 ranks: $(tail -3 "$TMP/sbn.out")"

# stopped with 2 ranks, resumed with 1
"$DEMP" train "${A[@]}" --nproc 2 --stop-after 70 --out "$TMP/re" >"$TMP/re1.out" 2>&1 && ok || bad "stop with 2 ranks"
"$DEMP" train --resume --out "$TMP/re" --progress none >"$TMP/re2.out" 2>&1 && ok ||
  bad "resume with 1 process: $(tail -3 "$TMP/re2.out")"
[ "$(json "$TMP/re/summary.json" '["status"]')" = finished ] && [ "$(json "$TMP/re/summary.json" '["steps"]')" = 128 ] &&
  ok || bad "resumed run did not finish"

# a peer that never arrives: a clear error within the timeout, not a hang
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s)
out=$(RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout 60 "$DEMP" train "${A[@]}" \
  --dist-timeout 3 --out "$TMP/alone" 2>&1)
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 30 ] && printf '%s' "$out" | grep -q "demp: error:.*arrive"; then
  ok
else
  bad "missing peer: rc $rc after ${took}s: $out"
fi

# the batch must split evenly over the ranks
odd=()
for a in "${A[@]}"; do [ "$a" = 64 ] && odd+=(63) || odd+=("$a"); done
out=$("$DEMP" train "${odd[@]}" --nproc 2 --out "$TMP/odd" 2>&1)
[ $? -ne 0 ] && printf '%s' "$out" | grep -q "does not split evenly over 2 ranks" && ok || bad "odd batch: $out"

finish
