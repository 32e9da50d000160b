#!/usr/bin/env bash
# demp frontier --quick on real (tiny) training runs: every method of the catalogue once, two at a
# time, on a small MLP over a slice of Fashion-MNIST; the table; a rerun that trains nothing; and
# the refusals a user meets. About 30 s on 2 cores.
. "$(dirname "$0")/smoke_lib.sh"
cd "$TMP" || exit 1
BASE=(--model mlp --mlp-widths 64,32 --batch-size 64)

if "$DEMP" frontier --help > help.txt 2>&1 && grep -q -- "--levels" help.txt && grep -q "gradual" help.txt; then
  ok
else
  bad "frontier --help: $(cat help.txt)"
fi

if "$DEMP" frontier --quick --jobs 2 --out F -- "${BASE[@]}" > f1.txt 2>&1; then
  ok
else
  bad "frontier --quick failed: $(tail -20 f1.txt)"
fi
check "frontier.json" grep -q '"kind": "frontier"' F/frontier.json
# N, the catalogue's size, from the frontier's own run list (not written here a second time): one
# run per method, each a distinct series, dense, DemP and gradual among them
N=$(python3 -c '
import json, sys
runs = json.load(open("F/frontier.json"))["runs"]
keys = [r["key"] for r in runs]
ok = len(set(keys)) == len(keys) and {"dense", "demp", "gradual"} <= set(keys)
print(len(runs) if ok else 0)' 2>/dev/null || echo 0)
check "frontier.json: one run per method ($N)" [ "$N" -ge 3 ]
check "$N run directories" [ "$(ls -d F/*-s0 | wc -l)" -eq "$N" ]
check "every run finished" [ "$(grep -c '"status": "finished"' F/*/summary.json | grep -c ':1$')" -eq "$N" ]
check "frontier printed its run count" grep -q "frontier: $N runs" f1.txt
check "table.md: header and one row per run" [ "$(grep -c '^| ' F/table.md)" -eq $((N + 1)) ]
check "one best row (and the header)" [ "$(grep -c '| best |$' F/table.md)" -eq 2 ]
check "the printed table" grep -q "DemP (paper form)" f1.txt
# every baseline landed at its closest cut to 25% of the parameters (DemP's controller is not held
# to a size on so short a run: tests/test_demp.cpp checks it on a real one)
if python3 - F <<'PY'
import json, sys, glob, os
bad = []
for d in glob.glob(os.path.join(sys.argv[1], "*-p0.25-s0")):
    if os.path.basename(d).startswith("demp"):
        continue
    s = json.load(open(os.path.join(d, "summary.json")))
    f = s["params_final"] / s["params_initial"]
    if abs(f - 0.25) > 0.03:
        bad.append("%s %.3f" % (os.path.basename(d), f))
print(" ".join(bad))
sys.exit(1 if bad else 0)
PY
then ok; else bad "runs far from 25% of the parameters"; fi

# the same frontier again: nothing is trained
"$DEMP" frontier --quick --jobs 2 --out F -- "${BASE[@]}" > f2.txt 2>&1 && ok || bad "rerun failed: $(tail -5 f2.txt)"
check "rerun skips all $N" [ "$(grep -c 'skipped (finished' f2.txt)" -eq "$N" ]
# an option --resume may change (how runs are run, not what is trained) continues the directory
"$DEMP" frontier --quick --jobs 2 --out F -- "${BASE[@]}" --checkpoint-every 1000 > f3.txt 2>&1 && ok ||
  bad "rerun with --checkpoint-every refused: $(tail -5 f3.txt)"
check "and skips all $N" [ "$(grep -c 'skipped (finished' f3.txt)" -eq "$N" ]

# refusals: one line with a hint, non-zero exit
"$DEMP" frontier --quick --out F -- "${BASE[@]}" --lr 0.1 > e1.txt 2>&1 && bad "other options accepted" || ok
check "other options: says so" grep -q "other settings" e1.txt
"$DEMP" frontier --quick --out G --methods demp,nope > e2.txt 2>&1 && bad "unknown method accepted" || ok
check "unknown method: names it" grep -q "unknown method 'nope'" e2.txt
"$DEMP" frontier --quick --out G -- --seed 1 > e3.txt 2>&1 && bad "--seed accepted" || ok
check "--seed: the frontier sets it" grep -q "sets --seed" e3.txt
# SIGTERM to the frontier is passed on to the running run, which writes its checkpoint; the
# frontier starts nothing more, says how to resume, and exits 130
"$DEMP" frontier --seeds 1 --methods dense --out S -- "${BASE[@]}" --train-limit 2048 --test-limit 256 \
  --steps 200000 > s1.txt 2>&1 &
pid=$!
for _ in $(seq 150); do grep -q "^step " S/dense-s0/output.log 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
wait $pid
rc=$?
check "SIGTERM: exit 130 (got $rc)" test $rc -eq 130
check "SIGTERM: the run was interrupted, not killed" grep -q '"status": "interrupted"' S/dense-s0/summary.json
check "SIGTERM: its checkpoint is there" test -f S/dense-s0/model.ckpt
check "SIGTERM: says how to resume" grep -q "run the same command again" s1.txt
finish
