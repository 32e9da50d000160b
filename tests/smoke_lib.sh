# Sourced by the *_smoke.sh tests: the demp binary from $1, a temporary directory $TMP removed at
# exit, and pass/fail counting (ok, bad "why", and finish as the script's last line).
set -u
NAME=$(basename "$0" .sh)
DEMP=${1:?usage: $NAME.sh path/to/demp}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() {  # check "what" command...: ok when the command succeeds
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}
expect_error() {  # expect_error "grep pattern" args...: one "demp: error:" line, non-zero, no crash
  local pat=$1
  shift
  local out rc
  out=$("$DEMP" "$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -q "demp: error:.*$pat" &&
    [ "$(printf '%s\n' "$out" | grep -c 'demp: error')" -eq 1 ] && ! printf '%s' "$out" | grep -qi "backtrace\|terminate called"; then
    ok
  else
    bad "demp $* -> rc $rc: $out"
  fi
}
finish() {
  echo "$NAME: $pass passed, $fail failed"
  [ $fail -eq 0 ]
}
