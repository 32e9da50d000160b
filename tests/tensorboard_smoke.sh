#!/usr/bin/env bash
# --tensorboard on a real (tiny) DemP run that stops and resumes: the tensorboard Python package's
# own event reader (EventAccumulator) finds every metrics.jsonl row under the documented tags,
# each once, also after a crash that logged past its checkpoint; metrics.csv has a header and one
# row per metrics.jsonl row. Exit 77 (skipped) when .venv has no tensorboard. A few seconds.
. "$(dirname "$0")/smoke_lib.sh"
SRC=${DEMP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY="$SRC/.venv/bin/python"
if ! "$PY" -c 'import tensorboard' 2> /dev/null; then
  echo "tensorboard_smoke: $PY has no tensorboard package (scripts/setup installs it): skipped"
  exit 77
fi
cd "$TMP" || exit 1
BASE=(--model mlp --mlp-widths 64,32 --width 1 --batch-size 32 --train-limit 512 --test-limit 200
      --method demp --lambda 0.5 --prune-after 10 --prune-every 10 --log-every 5 --progress none
      --threads 1)
TINY=("${BASE[@]}" --out run --tensorboard tb)
if "$DEMP" train "${TINY[@]}" --steps 60 --stop-after 23 > a.txt 2>&1; then ok; else bad "first part: $(cat a.txt)"; fi
# A crash after logging past the checkpoint: the run goes on to step 41 and logs, then its
# directory is put back as it was at the step-23 checkpoint (the events of steps 25..41 stay in
# tb/), and it resumes from 23: TensorBoard must show each step once, with the resumed values.
cp -r run run23
if "$DEMP" train --resume --out run --progress none --stop-after 41 > b.txt 2>&1; then ok; else bad "resume 1: $(cat b.txt)"; fi
rm -rf run && mv run23 run
if "$DEMP" train --resume --out run --progress none > b.txt 2>&1; then ok; else bad "resume 2: $(cat b.txt)"; fi
check "three events files (one per process)" [ "$(ls tb | grep -c '^events\.out\.tfevents\.')" -eq 3 ]
if "$PY" "$SRC/tests/check_tensorboard.py" tb run --expect-tag train/loss --expect-tag eval/test_acc \
     --expect-tag prune/lambda --expect-tag prune/sigma --expect-tag units/total --expect-tag size/params \
     --expect-tag size/flops --expect-tag train/lr --expect-tag time/step_seconds > check.txt 2>&1; then
  ok
  cat check.txt
else
  bad "TensorBoard's reader disagrees with metrics.jsonl: $(cat check.txt)"
fi
check "DemP pruned something (else units/* would be flat)" \
  python3 -c "import json,sys; sys.exit(0 if json.load(open('run/summary.json'))['prune_events'] else 1)"
rows=$(grep -c . run/metrics.jsonl)
check "metrics.csv: header + one row per metrics.jsonl row" [ "$(grep -c . run/metrics.csv)" -eq $((rows + 1)) ]
check "metrics.csv header" grep -q '^step,epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,val_loss,val_accuracy,live_units,params,flops,elapsed_seconds,step_seconds,reg_lambda,noise_std,dead_units,target,target_planned,target_projected,live_units_per_group$' run/metrics.csv
# a run started without --tensorboard and resumed with it: its rows so far are written first
if "$DEMP" train "${BASE[@]}" --steps 30 --stop-after 12 --out plain > d.txt 2>&1 &&
   "$DEMP" train --resume --out plain --progress none --tensorboard tb2 > e.txt 2>&1; then
  ok
else
  bad "plain run resumed with --tensorboard: $(cat d.txt e.txt)"
fi
if "$PY" "$SRC/tests/check_tensorboard.py" tb2 plain --expect-tag train/loss > check2.txt 2>&1; then
  ok
else
  bad "a run resumed with --tensorboard lacks rows: $(cat check2.txt)"
fi
# --overwrite replaces the old run's events files
if "$DEMP" train "${TINY[@]}" --steps 10 --overwrite > c.txt 2>&1; then ok; else bad "overwrite: $(cat c.txt)"; fi
check "overwrite leaves one events file" [ "$(ls tb | grep -c '^events\.out\.tfevents\.')" -eq 1 ]
finish
