#!/usr/bin/env bash
# sweep, study and report on real (tiny) training runs: a 2-run sweep, its rerun skipping both,
# a failing run, the HTML report on the sweep and on a small frontier directory, a 2-run study,
# and the errors a user sees. (tests/report_render.sh opens a report in Chromium.) Under a minute
# on 2 busy cores.
. "$(dirname "$0")/smoke_lib.sh"
cd "$TMP" || exit 1
TINY=(--model mlp --mlp-widths 16 --steps 20 --batch-size 32 --train-limit 256 --test-limit 100)

if ! "$DEMP" --help 2>&1 | grep -qE '^ +sweep '; then
  echo "report_smoke: $DEMP has no 'sweep' subcommand (is add_report_commands wired into cli/main.cpp?)"
  exit 1
fi
for sub in sweep study report; do
  if "$DEMP" "$sub" --help > help.txt 2>&1 && grep -q -- "--out" help.txt; then ok; else bad "$sub --help"; fi
done

# --- a sweep of two runs ----------------------------------------------------------------------
if "$DEMP" sweep --out T --grid seed=0,1 -- "${TINY[@]}" --method demp --lambda 0.05 > sweep1.txt 2>&1; then
  ok
else
  bad "sweep failed: $(cat sweep1.txt)"
fi
check "table.csv has a header and 2 rows" [ "$(wc -l < T/table.csv)" -eq 3 ]
check "table.csv columns" grep -q "^run,seed,method,model,width,dataset,steps,test_accuracy,best_test_accuracy,units_initial,units_final,units_fraction,params_initial,params_final,params_fraction,flops_initial,flops_final,flops_fraction,train_seconds,status$" T/table.csv
check "both runs finished" [ "$(grep -c ',finished$' T/table.csv)" -eq 2 ]
check "table.json" grep -q '"rows"' T/table.json
check "sweep.json" grep -q '"base_args"' T/sweep.json
check "run directory names" test -f "T/seed=0/summary.json" -a -f "T/seed=1/summary.json"
check "one progress line per run start and end" [ "$(grep -c '^\[[12]/2\] seed=[01]: \(start\|finished\)' sweep1.txt)" -eq 4 ]

# the same sweep again: nothing is trained
"$DEMP" sweep --out T --grid seed=0,1 -- "${TINY[@]}" --method demp --lambda 0.05 > sweep2.txt 2>&1 && ok || bad "rerun failed: $(cat sweep2.txt)"
check "rerun skips both runs" [ "$(grep -c 'skipped (finished' sweep2.txt)" -eq 2 ]
check "rerun trains nothing" [ "$(grep -c '^===' T/seed=0/output.log)" -eq 1 ]

# other train options in the same sweep directory are refused
if "$DEMP" sweep --out T --grid seed=0,1 -- "${TINY[@]}" > other.txt 2>&1; then
  bad "a sweep with other train options reused T"
else
  grep -q "demp: error:.*other train options" other.txt && ok || bad "other options: $(cat other.txt)"
fi

# a failing run is reported and the sweep exits non-zero
"$DEMP" sweep --out F --grid lr=0.01,-1 -- "${TINY[@]}" > failed.txt 2>&1
rc=$?
check "failed sweep exits non-zero" [ $rc -ne 0 ]
check "failed run reported with its last line" grep -q "FAILED (exit 2).*--lr must be positive" failed.txt
check "the other run finished" grep -q "^lr=0.01,0.01,.*,finished$" F/table.csv
check "failed row" grep -q "^lr=-1,-1,.*,failed$" F/table.csv

# --- the report -------------------------------------------------------------------------------
if "$DEMP" report T --out R > report.txt 2>&1; then ok; else bad "report failed: $(cat report.txt)"; fi
for p in accuracy_vs_units accuracy_vs_params accuracy_vs_time live_units dead_units layer_widths; do
  check "plot $p.svg" [ -s "R/$p.svg" ]
  check "plot $p.png" [ -s "R/$p.png" ]
done
check "index.html" [ -s R/index.html ]
check "plots inline" [ "$(grep -c '^<svg' R/index.html)" -ge 6 ]
check "summary table" grep -q "<th>speed-up</th>" R/index.html
check "run in the table" grep -q "<td>seed=1</td>" R/index.html
check "report default directory" "$DEMP" report T > /dev/null 2>&1
check "DIR/report" [ -s T/report/index.html ]

check "one setting, two seeds, in the summary" grep -q "<td>demp</td><td>λ 0.05</td><td>2</td>" R/index.html

# --- a frontier directory of real runs (the layout `demp frontier` writes) ---------------------
# frontier.json gives each run's series, level and seed; the report averages the seeds, draws
# dense as a reference line and plots λ(t) and σ(t) from what DemP logs.
# 16 units, not TINY's 4: at 4, a target of 50% can empty a layer.
FTINY=(--model mlp --mlp-widths 64 --steps 32 --batch-size 32 --train-limit 256 --test-limit 100)
mkdir -p FR
for seed in 0 1; do
  "$DEMP" train "${FTINY[@]}" --seed $seed --out FR/dense-s$seed --progress none > /dev/null 2>&1 || bad "dense seed $seed"
  "$DEMP" train "${FTINY[@]}" --seed $seed --method demp --target-params 0.5 --prune-every 5 \
    --out FR/demp-p0.5-s$seed --progress none > /dev/null 2>&1 || bad "demp seed $seed"
done
cat > FR/frontier.json <<'JSON'
{"kind": "frontier", "levels": [0.5], "seeds": [0, 1], "runs": [
 {"name": "dense-s0", "series": "dense", "method": "dense", "level": null, "seed": 0},
 {"name": "dense-s1", "series": "dense", "method": "dense", "level": null, "seed": 1},
 {"name": "demp-p0.5-s0", "series": "DemP (ours)", "method": "demp", "level": 0.5, "seed": 0},
 {"name": "demp-p0.5-s1", "series": "DemP (ours)", "method": "demp", "level": 0.5, "seed": 1}]}
JSON
if "$DEMP" report FR --out RF > rf.txt 2>&1; then ok; else bad "report on a frontier: $(cat rf.txt)"; fi
for p in accuracy_vs_params accuracy_vs_flops accuracy_vs_time live_units lambda_schedule \
  noise_schedule train_loss test_accuracy accuracy_vs_wallclock layer_widths; do
  check "frontier plot $p" [ -s "RF/$p.svg" -a -s "RF/$p.png" ]
done
check "frontier summary row" grep -q "<td>DemP (ours)[^<]*</td><td>50%</td><td>2</td>" RF/index.html
check "dense is the reference line" grep -q "title 'dense .*(2 runs)'" RF/accuracy_vs_params.gp
check "points labelled with their level" grep -q '"50%"' RF/accuracy_vs_params.gp
check "printed table has the setting" grep -qE "^DemP \(ours\).* 50% +2 " rf.txt

# --- a study of two runs ----------------------------------------------------------------------
# The study's method is "scan" (dense, no removal); with a demp binary that predates it, DemP's
# rows carry the same fields.
METHOD=scan
"$DEMP" train "${TINY[@]}" --steps 1 --method scan --out scan-probe --progress none > /dev/null 2>&1 || METHOD=demp
if "$DEMP" study --out S --lr 0.002,0.02 --method "$METHOD" -- "${TINY[@]}" --prune-every 5 > study.txt 2>&1; then
  ok
else
  bad "study failed: $(cat study.txt)"
fi
check "study table has 2 rows" [ "$(wc -l < S/table.csv)" -eq 3 ]
check "study table has the final dead fraction" grep -q "final_dead_fraction,status$" S/table.csv
check "study.json curves" grep -q '"curve"' S/study.json
check "study.json expectations" grep -q '"expectations"' S/study.json
check "expectation for lr" grep -qE "^  lr +(agrees|disagrees|mixed|no difference) " S/study.txt
check "study printed the check" grep -q "The paper's expectations" study.txt
check "dead fraction plot" [ -s S/dead_fraction.svg ]
check "study runs without removal defaults" grep -q '"--lambda"' S/sweep.json
if "$DEMP" report S --out RS > rs.txt 2>&1; then
  check "study section in the report" grep -q "Study: S" RS/index.html
else
  bad "report on the study: $(cat rs.txt)"
fi

# --- errors -----------------------------------------------------------------------------------
expect_error "has no option --lamda" sweep --out E --grid lamda=0.1
expect_error "KEY=V1,V2" sweep --out E --grid lambda
expect_error "sets --out on every run" sweep --out E --grid seed=0 -- --out x
expect_error "gnuplot not found" report T --gnuplot /nonexistent/gnuplot
expect_error "not a directory" report "$TMP/nothing"
mkdir -p empty
expect_error "no runs in" report empty

finish
