#!/usr/bin/env bash
# The fault battery, CLI side (issue 14): bad options, bad data, run-directory safety, signals,
# resume, foreign files, distributed faults. Every refusal must be one line
# "demp: error: ... (hint: ...)" with a non-zero exit, within a time limit, without a stack trace,
# an abort or a "may be a bug"; nothing a user had may be lost. The library side (disk full,
# foreign checkpoints, locks) is tests/test_faults.cpp.
. "$(dirname "$0")/smoke_lib.sh"

declare -A cases
cat_=""
category() { cat_=$1; }
count() { cases[$cat_]=$((${cases[$cat_]:-0} + 1)); }

# refuse "grep pattern" args... : one clean error line with a hint, in under 60 s, and no other
# output than demp's own lines (no library logging, no stack frames, no empty lines). ENVS: extra
# environment variables for the command.
ENVS=()
refuse() {
  local pat=$1
  shift
  count
  local out rc
  out=$(env ${ENVS[@]+"${ENVS[@]}"} timeout 60 "$DEMP" "$@" 2>&1 </dev/null)
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && printf '%s' "$out" | grep -q -- "demp: error:.*$pat" &&
    [ "$(printf '%s\n' "$out" | grep -c 'demp: error')" -eq 1 ] &&
    printf '%s' "$out" | grep 'demp: error' | grep -q '(hint: ' &&
    ! printf '%s\n' "$out" | grep -qv '^demp: ' &&
    ! printf '%s' "$out" | grep -qi "backtrace\|terminate called\|may be a bug"; then
    ok
  else
    bad "[$cat_] demp $* -> rc $rc: $out"
  fi
}

# warns "pattern" args... : runs to the end (rc 0) and prints the warning.
warns() {
  local pat=$1
  shift
  count
  local out
  if out=$(timeout 120 "$DEMP" "$@" 2>&1 </dev/null) && printf '%s' "$out" | grep -q -- "demp: warning: .*$pat"; then
    ok
  else
    bad "[$cat_] demp $* should warn '$pat': $out"
  fi
}

check() {  # check "what" command...
  local what=$1
  shift
  count
  if "$@"; then ok; else bad "[$cat_] $what"; fi
}

# A small learnable data set (raw IDX, 12x12, 5 classes) so that every run takes a second.
D=$TMP/data
mkdir -p "$D"
python3 - "$D" <<'EOF'
import random, struct, sys
d = sys.argv[1]
def write(prefix, n, seed):
    r = random.Random(seed)
    labels = [r.randrange(5) for _ in range(n)]
    px = bytearray()
    for k in labels:
        img = [r.randrange(60) for _ in range(144)]
        for c in range(12):
            img[(2 * k) * 12 + c] += 150
        px += bytes(img)
    open(f"{d}/{prefix}-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 12, 12) + px)
    open(f"{d}/{prefix}-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes(labels))
write("train", 512, 1)
write("t10k", 128, 2)
EOF
# CLI11 refuses a repeated option, so a case's options replace the base ones: `opts ARGS...` sets
# A to the base options with those in ARGS replaced, followed by the rest of ARGS.
opts() {
  declare -A o=([--model]=mlp [--mlp-widths]=16 [--data]="mnist:$D" [--batch-size]=32 [--steps]=20
    [--progress]=none [--threads]=1)
  local extra=()
  while [ $# -gt 0 ]; do
    if [ -n "$1" ] && [ -n "${o[$1]+x}" ] && [ $# -gt 1 ]; then
      o[$1]=$2
      shift 2
    else
      extra+=("$1")
      shift
    fi
  done
  A=()
  for k in "${!o[@]}"; do A+=("$k" "${o[$k]}"); done
  A+=(${extra[@]+"${extra[@]}"})
}
tr_refuse() { local pat=$1; shift; opts "$@"; refuse "$pat" train "${A[@]}"; }
tr_warns() { local pat=$1; shift; opts "$@"; warns "$pat" train "${A[@]}"; }
trn() { opts "$@"; "$DEMP" train "${A[@]}"; }

# ---- options ------------------------------------------------------------------------------------
category options
tr_refuse "lr must be positive and finite" --lr inf --out "$TMP/o1"
tr_refuse "lr must be positive and finite" --lr nan --out "$TMP/o1"
tr_refuse "lambda, --noise and --dead-eps must be finite" --lambda nan --out "$TMP/o1"
tr_refuse "lambda, --noise and --dead-eps must be finite" --lambda inf --out "$TMP/o1"
tr_refuse "momentum must be in \[0, 1)" --momentum -1 --out "$TMP/o1"
tr_refuse "momentum must be in \[0, 1)" --momentum 2 --out "$TMP/o1"
tr_refuse "out of range" --seed 9223372036854775808 --out "$TMP/o1"
tr_refuse "seed must be >= 0" --seed -1 --out "$TMP/o1"
tr_refuse "not a whole number" --steps 1e3 --out "$TMP/o1"
tr_refuse "threads 100000 is more than" --threads 100000 --out "$TMP/o1"
tr_refuse "nproc 64 is more ranks than" --nproc 64 --out "$TMP/o1"
tr_refuse "out is empty" --out ""
tr_refuse "checkpoint-every must be >= 0" --checkpoint-every -1 --out "$TMP/o1"
tr_refuse "width must be finite" --width inf --out "$TMP/o1"
tr_refuse "weight-decay must be finite" --weight-decay inf --out "$TMP/o1"
tr_refuse "milestones .* are not in increasing order" --lr-schedule step:4,2:0.1 --out "$TMP/o1"
tr_refuse "hidden width 99999999999999 .* out of range" --mlp-widths 99999999999999 --out "$TMP/o1"
tr_refuse "parameters, more than demp builds" --mlp-widths 1000000,1000000 --out "$TMP/o1"
tr_refuse "unknown option --lamda for 'demp train' (did you mean --lambda?)" --lamda 0.01 --out "$TMP/o1"
refuse "unknown subcommand 'trian' (did you mean 'train'?)" trian --out "$TMP/o1"
refuse "unknown option --batchsize .*did you mean --batch-size" eval "$TMP/o1" --batchsize 10
opts
refuse "repeats the value 0.10 (as 0.1)" sweep --out "$TMP/sw" --grid lr=0.1,0.10 -- "${A[@]}"
mkdir -p "$TMP/cfgdir"
refuse "is a directory" train --config "$TMP/cfgdir" --out "$TMP/o1"
echo '{"config": "other.json"}' > "$TMP/c1.json"
refuse "cannot name another" train --config "$TMP/c1.json" --out "$TMP/o1"
echo '{"lr": 0.1, "lr": 0.2}' > "$TMP/c2.json"
refuse "gives the key 'lr' twice" train --config "$TMP/c2.json" --out "$TMP/o1"
echo '{"lr": 1e999}' > "$TMP/c3.json"
refuse "not valid JSON: number overflow" train --config "$TMP/c3.json" --out "$TMP/o1"
no_raw_json() { ! "$DEMP" train --config "$TMP/c3.json" 2>&1 | grep -q 'json.exception'; }
check "no raw JSON-library text" no_raw_json
echo '{"seed": 9223372036854775808}' > "$TMP/c4.json"
refuse "below 2\^63" train --config "$TMP/c4.json" --out "$TMP/o1"
check "nothing was created by the refusals" test ! -e "$TMP/o1"
tr_warns "--lambda has no effect with --method dense" --method dense --lambda 0.1 --out "$TMP/w1"
tr_warns "--density applies to the baselines only" --method demp --density 0.3 --out "$TMP/w2"
tr_warns "--stop-after 100 is not before the run's end" --stop-after 100 --out "$TMP/w3"
tr_warns "--sync-bn has no effect without data-parallel" --sync-bn --out "$TMP/w4"
tr_warns "--prune-at 50 is beyond the run's 20 steps" --method slimming --prune-at 50 --out "$TMP/w5"

# ---- data ---------------------------------------------------------------------------------------
category data
mkdir -p "$TMP/bomb" "$TMP/zero"
python3 - "$TMP/bomb" "$TMP/zero" "$D" <<'EOF'
import gzip, shutil, struct, sys
bomb, zero, d = sys.argv[1:4]
# 10 images of 28x28 promised, 256 MiB delivered (about 250 KB of gzip).
with gzip.open(f"{bomb}/train-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
    f.write(struct.pack(">IIII", 0x803, 10, 28, 28))
    block = bytes(1 << 20)
    for _ in range(256):
        f.write(block)
open(f"{bomb}/train-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, 10) + bytes(10))
open(f"{zero}/train-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, 10, 0, 0))
open(f"{zero}/train-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, 10) + bytes(10))
for n in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    shutil.copy(f"{d}/{n}", f"{bomb}/{n}")
    shutil.copy(f"{d}/{n}", f"{zero}/{n}")
EOF
count
opts --data "mnist:$TMP/bomb" --out "$TMP/d1"
out=$( (ulimit -v 4000000; timeout 30 "$DEMP" train "${A[@]}") 2>&1)
printf '%s' "$out" | grep -q "demp: error: .*inflates to more than the 7856 bytes its header promises" && ok ||
  bad "[data] gzip bomb: $out"
tr_refuse "10 images of 0x0 pixels" --data "mnist:$TMP/zero" --out "$TMP/d2"
tr_refuse "does not exist" --data "mnist:$TMP/nothing" --out "$TMP/d3"

# ---- run directory ------------------------------------------------------------------------------
category directory
R=$TMP/run
trn --out "$R" > /dev/null 2>&1
check "a reference run" test -f "$R/summary.json"
sum0=$(md5sum "$R/model.ckpt" "$R/summary.json")
tr_refuse "does not exist" --data "mnist:$TMP/nothing" --overwrite --out "$R"
tr_refuse "unknown model 'alexnet'" --model alexnet --overwrite --out "$R"
check "--overwrite with bad options kept the old run" test "$sum0" = "$(md5sum "$R/model.ckpt" "$R/summary.json")"
refuse "refusing to write over .*model.ckpt, a file of the run directory" export "$R" --out "$R/model.ckpt" --format torch
refuse "refusing to write over .*summary.json" export "$R" --out "$R/summary.json" --format onnx
refuse "is a directory" export "$R" --out "$R" --format onnx
check "export refusals kept the run" test "$sum0" = "$(md5sum "$R/model.ckpt" "$R/summary.json")"
export_new() { "$DEMP" export "$R" --out "$R/model.onnx" > /dev/null 2>&1; }
check "a new file in the run directory is fine" export_new
# A second writer on a run directory in use is refused (the first is stopped by SIGTERM below).
L=$TMP/locked
opts --batch-size 4 --steps 100000 --out "$L"
"$DEMP" train "${A[@]}" > "$TMP/l.out" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -f "$L/config.json" ] && break; sleep 0.1; done
tr_refuse "in use by another demp process (pid $pid)" --overwrite --out "$L"
# A run that diverges before its first checkpoint: honest summary, honest eval and compare.
tr_refuse "loss became .* diverged before its first checkpoint" --optimizer sgd --lr 1e30 --out "$TMP/nan"
check "diverged summary has no unmeasured accuracy" python3 -c "
import json,sys; s=json.load(open('$TMP/nan/summary.json'))
sys.exit(not (s['status']=='diverged' and s['test_accuracy'] is None and s['checkpoint'] is False))"
refuse "never wrote a checkpoint (status diverged)" eval "$TMP/nan"
refuse "diverged at step .*hint: run it again with a lower --lr" compare "$TMP/nan"

# ---- signals ------------------------------------------------------------------------------------
category signals
kill -TERM $pid
wait $pid
rc=$?
check "SIGTERM: exit 130 (got $rc)" test $rc -eq 130
check "SIGTERM: summary says interrupted" grep -q '"status": "interrupted"' "$L/summary.json"
check "SIGTERM: says how to resume" grep -q "demp train --resume --out $L" "$TMP/l.out"
check "SIGTERM: the checkpoint is there" test -f "$L/model.ckpt"
resume_after_term() {
  local at
  at=$(python3 -c "import json;print(json.load(open('$L/summary.json'))['step'])")
  "$DEMP" train --resume --out "$L" --stop-after $((at + 3)) > /dev/null 2>&1
}
check "SIGTERM: the run resumes (the lock was released)" resume_after_term
S=$TMP/sigint
opts --batch-size 4 --steps 100000 --checkpoint-every 5 --out "$S"
"$DEMP" train "${A[@]}" > "$TMP/s.out" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -f "$S/model.ckpt" ] && break; sleep 0.1; done
kill -INT $pid
wait $pid
rc=$?
check "SIGINT: exit 130 (got $rc)" test $rc -eq 130
check "SIGINT: summary says interrupted" grep -q '"status": "interrupted"' "$S/summary.json"
check "metrics.jsonl has only whole lines" python3 -c "
import json; [json.loads(l) for l in open('$S/metrics.jsonl')]"
# --checkpoint-every: killed with -9 right after a checkpoint appears, the run resumes from a
# multiple of N, not from step 0 or an epoch end.
K=$TMP/kill9
opts --batch-size 1 --steps 100000 --checkpoint-every 7 --out "$K"
"$DEMP" train "${A[@]}" > /dev/null 2>&1 &
pid=$!
for _ in $(seq 300); do [ -f "$K/model.ckpt" ] && break; sleep 0.05; done
kill -9 $pid
wait $pid 2>/dev/null
out=$("$DEMP" train --resume --out "$K" --stop-after 60 2>&1)
step=$(printf '%s' "$out" | grep -o "resume step [0-9]*" | grep -o "[0-9]*$")
check "--checkpoint-every 7: resumed at step ${step:-none}" test -n "$step" -a "${step:-0}" -gt 0 -a $((${step:-1} % 7)) -eq 0 -a $((${step:-1} % 512)) -ne 0

# ---- resume -------------------------------------------------------------------------------------
category resume
P=$TMP/part
trn --stop-after 7 --out "$P" > /dev/null 2>&1
cp -r "$P" "$TMP/copy"
resume_dir() { "$DEMP" train --resume --out "$1" > /dev/null 2>&1 && grep -q finished "$1/summary.json"; }
check "resuming a copy finishes the copy" resume_dir "$TMP/copy"
check "... and leaves the original as it was" test ! -e "$P/summary.json"
mv "$P" "$TMP/moved"
check "resuming a moved run works where it is" resume_dir "$TMP/moved"
check "... and does not recreate the old path" test ! -e "$P"
trn --stop-after 7 --out "$P" > /dev/null 2>&1
refuse "these options differ: --lr 0.5 (the run has 0.002)" train --resume --out "$P" --lr 0.5
refuse "--model vgg16 (the run has mlp)" train --resume --out "$P" --model vgg16
count
out=$("$DEMP" train --resume --out "$P" --threads 2 --stop-after 9 2>&1)
printf '%s' "$out" | grep -q "resume applies --threads 2 (the run has 1)" && ok || bad "[resume] safe option: $out"
refuse "already finished" train --resume --out "$TMP/copy"
mkdir -p "$TMP/first"
cp "$R/config.json" "$TMP/first/"
echo "half" > "$TMP/first/model.ckpt.tmp"  # killed during the first checkpoint write
refuse "stopped before it wrote its first checkpoint.*hint: start it again with --overwrite" train --resume --out "$TMP/first"
tr_refuse "stopped before it wrote its first checkpoint.*hint: use --overwrite" --out "$TMP/first"
refuse "nothing to resume in .*: it holds no demp run" train --resume --out "$TMP/empty-dir"

# ---- foreign files ------------------------------------------------------------------------------
category foreign
echo "not a checkpoint" > "$TMP/f.ckpt"
refuse "not a demp checkpoint" eval "$TMP/f.ckpt"
refuse "not a demp checkpoint" info "$TMP/f.ckpt"
refuse "not a demp checkpoint" export "$TMP/f.ckpt" --out "$TMP/f.onnx"
head -c 3000 "$R/model.ckpt" > "$TMP/cut.ckpt"
refuse "truncated or corrupt" eval "$TMP/cut.ckpt"
refuse "batch-size must be positive" eval "$R" --batch-size 0

# ---- distributed --------------------------------------------------------------------------------
category distributed
ENVS=(RANK=1)
tr_refuse "RANK=1 is set but WORLD_SIZE is not" --out "$TMP/x1"
ENVS=(RANK=0 WORLD_SIZE=2)
tr_refuse "nproc 2 and torchrun's RANK/WORLD_SIZE both start ranks" --nproc 2 --out "$TMP/x2"
ENVS=(RANK=1 WORLD_SIZE=2 MASTER_ADDR=no-such-host.invalid)
tr_refuse "MASTER_ADDR 'no-such-host.invalid' does not resolve" --out "$TMP/x3"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ENVS=(RANK=1 WORLD_SIZE=2 MASTER_PORT=$port)
tr_refuse "rank 0 did not arrive" --dist-timeout 2 --out "$TMP/x4"
ENVS=()
# A peer that stalls mid-run (SIGSTOP): the other rank ends within --dist-timeout with one line,
# without c10d's logging and stack frames.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
opts --batch-size 4 --steps 100000 --dist-timeout 3 --out "$TMP/stall"
RANK=0 WORLD_SIZE=2 MASTER_PORT=$port "$DEMP" train "${A[@]}" > "$TMP/r0.out" 2>&1 &
p0=$!
RANK=1 WORLD_SIZE=2 MASTER_PORT=$port "$DEMP" train "${A[@]}" > "$TMP/r1.out" 2>&1 &
p1=$!
for _ in $(seq 300); do [ -f "$TMP/stall/config.json" ] && break; sleep 0.1; done
sleep 1
kill -STOP $p0
wait $p1
rc=$?
kill -KILL $p0
kill -CONT $p0
wait $p0 2>/dev/null
one_line_timeout() {
  [ $rc -eq 2 ] && [ "$(wc -l < "$TMP/r1.out")" -eq 1 ] &&
    grep -q "^demp: error: rank 1: .* failed: .*Timed out .*(hint: " "$TMP/r1.out"
}
check "a stalled peer: one error line on the other rank (rc $rc: $(head -c 300 "$TMP/r1.out"))" one_line_timeout
N=$TMP/nproc
opts --batch-size 4 --steps 100000 --nproc 2 --out "$N"
"$DEMP" train "${A[@]}" > "$TMP/n.out" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$N/config.json" ] && break; sleep 0.1; done
sleep 1
kill -TERM $pid
wait $pid
rc=$?
check "--nproc 2, SIGTERM to the launcher: exit 130 (got $rc)" test $rc -eq 130
check "--nproc 2, SIGTERM: summary says interrupted" grep -q '"status": "interrupted"' "$N/summary.json"
no_rank_left() { ! pgrep -f -- "--out $N" > /dev/null; }
check "--nproc 2, SIGTERM: no rank left running" no_rank_left

total=0
for k in "${!cases[@]}"; do
  echo "fault_battery: $k ${cases[$k]}"
  total=$((total + cases[$k]))
done
echo "fault_battery: $total cases"
finish
