#!/usr/bin/env bash
# Architecture files and weights in, through the CLI as users run them:
#  - the shipped examples (examples/arch/*.json) print their table, train with DemP until units are
#    removed, stop, resume, finish and export to ONNX; a baseline prunes them too;
#  - a built-in written as a file (info --write-arch) describes the same network as the built-in;
#  - a torchvision resnet18 state_dict (.venv's torch) imports and trains with --init;
#  - conflicting network options are refused with one line.
. "$(dirname "$0")/smoke_lib.sh"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="$SRC/.venv/bin/python"
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
TINY=(--train-limit 512 --test-limit 200 --batch-size 32 --steps 24 --threads 2 --progress none)

for ex in small_vgg resnet_block; do
  F="$SRC/examples/arch/$ex.json"
  "$DEMP" info --arch "$F" > "$TMP/$ex.table" 2>&1 && grep -q "^classifier" "$TMP/$ex.table" && ok ||
    bad "info --arch $ex: $(cat "$TMP/$ex.table")"
  # DemP at a large λ: dead units are removed every 4 steps. Stop half-way, resume, finish.
  R="$TMP/run-$ex"
  if "$DEMP" train --arch "$F" "${TINY[@]}" --method demp --lambda 0.5 --prune-every 4 --prune-after 0 --check-size 256 --stop-after 12 \
    --out "$R" > "$TMP/$ex.out" 2>&1; then ok; else bad "train --arch $ex: $(tail -3 "$TMP/$ex.out")"; fi
  [ -s "$R/arch.json" ] && ok || bad "$ex: no arch.json in the run directory"
  if "$DEMP" train --resume --out "$R" > "$TMP/$ex.resume" 2>&1; then ok; else bad "resume $ex: $(tail -3 "$TMP/$ex.resume")"; fi
  [ "$(json "$R/summary.json" '["status"]')" = finished ] && ok || bad "$ex: not finished after resume"
  u0=$(json "$R/summary.json" '["units_initial"]'); u1=$(json "$R/summary.json" '["units_final"]')
  [ "$u1" -lt "$u0" ] && ok || bad "$ex: DemP removed no units ($u1 of $u0)"
  grep -q "resume step 12" "$R/log.txt" && ok || bad "$ex: the run did not resume at step 12"
  [ "$(json "$R/summary.json" '["model"]')" != resnet18 ] && ok || bad "$ex: summary names the default model"
  if "$DEMP" export "$R" --out "$TMP/$ex.onnx" > "$TMP/$ex.export" 2>&1 && [ -s "$TMP/$ex.onnx" ]; then ok; else
    bad "export $ex: $(cat "$TMP/$ex.export")"; fi
  # A baseline on the same file.
  "$DEMP" train --arch "$F" "${TINY[@]}" --method snap --density 0.5 --prune-at 4 --out "$TMP/snap-$ex" \
    > "$TMP/$ex.snap" 2>&1 && ok || bad "snap on $ex: $(tail -3 "$TMP/$ex.snap")"
  [ "$(json "$TMP/snap-$ex/summary.json" '["units_final"]')" -lt "$u0" ] && ok || bad "$ex: snap removed no units"
done
# The ONNX export computes what demp computes (onnxruntime in .venv).
"$PY" -c "import onnxruntime, numpy as np
s = onnxruntime.InferenceSession('$TMP/resnet_block.onnx')
i = s.get_inputs()[0]
y = s.run(None, {i.name: np.zeros([2, 1, 28, 28], np.float32)})[0]
assert y.shape == (2, 10), y.shape" && ok || bad "onnxruntime cannot run the exported architecture file"

# Built-ins as files: the file describes the same network (same table).
for m in "--model resnet18" "--model resnet50 --width 0.25" "--model vgg16 --width 0.5" "--model mlp" "--model resnet18 --stem imagenet --in-channels 3 --input-size 64"; do
  "$DEMP" info $m --write-arch "$TMP/m.json" > /dev/null 2>&1 || bad "info $m --write-arch"
  if diff <("$DEMP" info $m) <("$DEMP" info --arch "$TMP/m.json") > "$TMP/diff" 2>&1; then ok; else bad "info $m vs its file: $(head -5 "$TMP/diff")"; fi
done

expect_error "both give the network" train --arch "$SRC/examples/arch/small_vgg.json" --model mlp --out "$TMP/x1"
expect_error "does not exist" train --arch "$TMP/none.json" --out "$TMP/x2" "${TINY[@]}"
echo '{"format": "demp-arch", "version": 1, "groups": [], "layers": [{"name": "fc", "kind": "lstm", "out": "logits"}], "program": ["fc"]}' > "$TMP/bad.json"
expect_error "layer 'fc' (#0): field \"kind\": unknown kind 'lstm'" info --arch "$TMP/bad.json"

# Weights in: torchvision's resnet18 (1 input channel, 10 classes), imported and fine-tuned.
if "$PY" -c "
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18(weights=None, num_classes=10)
m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
torch.save(m.state_dict(), '$TMP/r18.pt')" > "$TMP/py.out" 2>&1; then ok; else bad "python: $(cat "$TMP/py.out")"; fi
if "$DEMP" import --from "$TMP/r18.pt" --model resnet18 --in-channels 1 --input-size 28 --out "$TMP/r18.ckpt" > "$TMP/imp.out" 2>&1; then
  ok; else bad "import: $(cat "$TMP/imp.out")"; fi
expect_error "exists" import --from "$TMP/r18.pt" --model resnet18 --in-channels 1 --input-size 28 --out "$TMP/r18.ckpt"
expect_error "key 'conv1.weight' has shape \[64, 1, 7, 7\] in the file but layer 'stem' (#0) needs \[64, 1, 3, 3\]" \
  import --from "$TMP/r18.pt" --model resnet18 --stem cifar --in-channels 1 --input-size 28 --out "$TMP/r18c.ckpt"
"$DEMP" info "$TMP/r18.ckpt" | grep -q "^layer4.1.conv2" && ok || bad "info on the imported checkpoint"
# (a baseline that halves every group at step 1: three steps of the full-width ResNet-18 suffice)
if "$DEMP" train --init "$TMP/r18.ckpt" --train-limit 256 --test-limit 100 --batch-size 32 --steps 3 --threads 2 \
  --progress none --method snap --density 0.5 --prune-at 1 --out "$TMP/ft" > "$TMP/ft.out" 2>&1; then ok; else
  bad "train --init: $(tail -3 "$TMP/ft.out")"; fi
[ "$(json "$TMP/ft/summary.json" '["units_final"]')" -lt "$(json "$TMP/ft/summary.json" '["units_initial"]')" ] && ok ||
  bad "train --init pruned nothing"
grep -q "from checkpoint $TMP/r18.ckpt" "$TMP/ft/log.txt" && ok || bad "the --init run does not say where it started"
expect_error "both give the network" train --init "$TMP/r18.ckpt" --model resnet50 --out "$TMP/x3"
expect_error "both give the network" train --init "$TMP/r18.ckpt" --width 1 --out "$TMP/x3"
expect_error "both give the network" train --init "$TMP/r18.ckpt" --arch "$SRC/examples/arch/small_vgg.json" --out "$TMP/x4"
"$DEMP" import --from "$TMP/r18.pt" --model resnet18 --in-channels 1 --input-size 32 --out "$TMP/r18-32.ckpt" > /dev/null 2>&1 || bad "import at 32x32"
expect_error "the network takes 1x32x32" train --init "$TMP/r18-32.ckpt" --out "$TMP/x5" "${TINY[@]}"
finish
