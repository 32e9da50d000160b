#!/usr/bin/env bash
# CLI behaviour a user sees: help on every subcommand, clear one-line errors with non-zero exit,
# config file + flag override, info and eval.
. "$(dirname "$0")/smoke_lib.sh"


for sub in train eval info bench; do
  if "$DEMP" "$sub" --help > "$TMP/help" 2>&1 && grep -q -- "--" "$TMP/help"; then ok; else bad "$sub --help"; fi
done
# every training option is documented with its default
for opt in model width data method epochs steps batch-size optimizer lr lr-schedule weight-decay seed device out resume config; do
  grep -q -- "--$opt" <("$DEMP" train --help) && ok || bad "train --help lacks --$opt"
done

# ...and in the README
README="$(dirname "$0")/../README.md"
for opt in $("$DEMP" train --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
  [ "$opt" = "--help" ] && continue
  grep -q -- "\`$opt\`" "$README" && ok || bad "README does not document train $opt"
done

expect_error "unknown model 'alexnet'" train --model alexnet --out "$TMP/a" --progress none
expect_error "does not exist" train --data mnist:/nonexistent --out "$TMP/b" --progress none
expect_error "names no directory" train --data imagenet --out "$TMP/c" --progress none
expect_error "no CUDA device" train --device cuda --out "$TMP/d" --progress none
expect_error "unknown optimizer" train --optimizer lion --out "$TMP/e" --progress none
expect_error "unknown schedule" train --lr-schedule wave --out "$TMP/f" --progress none
expect_error "unknown key 'learning_rate'" train --config <(echo '{"learning_rate": 1}') --out "$TMP/g"
expect_error "not valid JSON" train --config <(echo '{oops') --out "$TMP/h"
expect_error "" train --batch-size abc
expect_error "no checkpoint" eval "$TMP/nothing.ckpt"

# config file gives values, flags override them, the resolved config is saved
echo '{"model": "mlp", "mlp-widths": "16", "steps": 5, "batch-size": 999}' > "$TMP/cfg.json"
if "$DEMP" train --config "$TMP/cfg.json" --batch-size 32 --train-limit 256 --test-limit 100 \
  --out "$TMP/run" --progress none > "$TMP/out" 2>&1; then
  grep -q '"batch-size": 32' "$TMP/run/config.json" && grep -q '"model": "mlp"' "$TMP/run/config.json" && ok || bad "config not resolved: $(cat "$TMP/run/config.json")"
  grep -q "test accuracy" "$TMP/out" && ok || bad "no summary table"
else
  bad "train with config failed: $(cat "$TMP/out")"
fi
expect_error "holds another run" train --config "$TMP/cfg.json" --train-limit 256 --out "$TMP/run" --progress none
"$DEMP" train --config "$TMP/cfg.json" --batch-size 32 --train-limit 256 --test-limit 100 --out "$TMP/run" --overwrite --progress none > /dev/null 2>&1 && ok || bad "--overwrite"
"$DEMP" eval "$TMP/run/model.ckpt" | grep -q "test accuracy" && ok || bad "eval"
"$DEMP" info --checkpoint "$TMP/run/model.ckpt" | grep -q "classifier" && ok || bad "info --checkpoint"
"$DEMP" info --model resnet50 --width 0.25 | grep -q "layer4.2.conv3" && ok || bad "info resnet50"
echo "not a checkpoint" > "$TMP/bad.ckpt"
expect_error "truncated or corrupt\|not a demp checkpoint" eval "$TMP/bad.ckpt"

# export: ONNX and torch files of the run; eval and info read them back; errors are one line
"$DEMP" export --help > /dev/null 2>&1 && ok || bad "export --help"
"$DEMP" export "$TMP/run" --out "$TMP/m.onnx" > "$TMP/exp" 2>&1 && grep -q "opset 17" "$TMP/exp" && ok || bad "export onnx: $(cat "$TMP/exp")"
"$DEMP" export "$TMP/run/model.ckpt" --format torch --out "$TMP/m.bin" > "$TMP/exp" 2>&1 && ok || bad "export torch: $(cat "$TMP/exp")"
a1=$("$DEMP" eval "$TMP/run" --json 2>&1 | grep test_accuracy)
a2=$("$DEMP" eval "$TMP/m.bin" --json 2>&1 | grep test_accuracy)
[ -n "$a1" ] && [ "$a1" = "$a2" ] && ok || bad "eval of the torch export: '$a2' vs '$a1'"
"$DEMP" info "$TMP/m.onnx" | grep -q "classifier" && ok || bad "info of an ONNX export"
"$DEMP" info "$TMP/m.bin" | grep -q "normalisation" && ok || bad "info of a torch export"
expect_error "ONNX model.*onnxruntime" eval "$TMP/m.onnx"
expect_error "cannot tell the export format" export "$TMP/run" --out "$TMP/m.xyz"
expect_error "unknown export format" export "$TMP/run" --format tflite --out "$TMP/m.xyz"
expect_error "opset 9 is not supported" export "$TMP/run" --out "$TMP/m9.onnx" --opset 9
expect_error "applies to ONNX exports only" export "$TMP/run" --out "$TMP/p.pt" --pad-channels 16
"$DEMP" export "$TMP/run" --out "$TMP/m16.onnx" --pad-channels 16 > /dev/null 2>&1 && ok || bad "export --pad-channels 16"
expect_error "not a demp checkpoint" export "$TMP/bad.ckpt" --out "$TMP/bad.onnx"
"$DEMP" bench --inference --checkpoint "$TMP/run" --rounds 1 --steps 2 --latency-steps 2 --warmup 1 \
  --inference-batch 8 --threads 1 > "$TMP/bi" 2>&1 && grep -q "onnxruntime  pruned16" "$TMP/bi" && ok || bad "bench --inference: $(cat "$TMP/bi")"
expect_error "needs the pruned network" bench --inference

finish
