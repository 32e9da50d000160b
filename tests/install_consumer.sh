#!/usr/bin/env bash
# The installed library as its users get it: `cmake --install` of this build into a temporary
# prefix, then examples/consumer configured as a separate CMake project against that prefix (and
# LibTorch's, as any LibTorch consumer), built, and run: it trains an MLP with DemP through the
# callbacks, prunes it by keep sets, saves, loads back and exports. About a minute (it compiles
# one LibTorch translation unit; up to three on busy cores).
#   install_consumer.sh BUILD_DIR TORCH_CMAKE_PREFIX
. "$(dirname "$0")/smoke_lib.sh"
BUILD=$(cd "${1:?build dir}" && pwd)
TORCH_PREFIX=${2:?LibTorch CMake prefix}
SRC=$(cd "$(dirname "$0")/.." && pwd)
if cmake --install "$BUILD" --prefix "$TMP/prefix" > install.log 2>&1; then ok; else bad "install: $(tail -5 install.log)"; fi
mv install.log "$TMP/" 2> /dev/null
check "installed libdemp" test -f "$TMP/prefix/lib/libdemp.a"
check "installed the public header" test -f "$TMP/prefix/include/demp/demp.h"
check "installed the CMake package" test -f "$TMP/prefix/lib/cmake/demp/demp-config.cmake" -a \
  -f "$TMP/prefix/lib/cmake/demp/demp-config-version.cmake" -a -f "$TMP/prefix/lib/cmake/demp/demp-targets.cmake"
check "installed demp runs" "$TMP/prefix/bin/demp" --help > /dev/null
# The consumer sees only the installed prefix: nothing of this source tree or build directory.
if cmake -S "$SRC/examples/consumer" -B "$TMP/consumer" -G Ninja \
     -DCMAKE_PREFIX_PATH="$TMP/prefix;$TORCH_PREFIX" > "$TMP/configure.log" 2>&1; then
  ok
else
  bad "configure: $(tail -20 "$TMP/configure.log")"
fi
check "the consumer found demp in the prefix" grep -q "^demp_DIR:PATH=$TMP/prefix/lib/cmake/demp" "$TMP/consumer/CMakeCache.txt"
if cmake --build "$TMP/consumer" > "$TMP/build.log" 2>&1; then ok; else bad "build: $(tail -20 "$TMP/build.log")"; fi
if grep -q -- "$SRC/src" "$TMP/consumer/build.ninja"; then bad "the consumer's build reads demp's source tree"; else ok; fi
if "$TMP/consumer/demp_consumer" fashion-mnist "$TMP/out" > "$TMP/run.log" 2>&1; then
  ok
else
  bad "the consumer failed: $(tail -20 "$TMP/run.log")"
fi
cat "$TMP/run.log"
check "callbacks: steps" grep -q "^step 60/60 | lr" "$TMP/run.log"
check "callbacks: prune events" grep -q "^prune at step" "$TMP/run.log"
check "dead units removed, logits unchanged" grep -q "logits unchanged" "$TMP/run.log"
check "pruned by keep sets" grep -q "^group .*: [0-9]* -> [0-9]*" "$TMP/run.log"
check "saved and loaded back the same" grep -q "the same logits" "$TMP/run.log"
check "exports written" test -s "$TMP/out/half.onnx" -a -s "$TMP/out/half.pt"
finish
