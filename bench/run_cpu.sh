#!/usr/bin/env bash
# The CPU figures of the closing notes: demp's training step against PyTorch's (same network,
# batch 128, same optimizer and thread count), ResNet-18 at width 0.25 and the MLP.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMP=${DEMP:-build/demp}
"$DEMP" bench --model resnet18 --width 0.25 --batch-size 128 --steps 20 --rounds 5 "$@"
"$DEMP" bench --model mlp --width 1 --batch-size 128 --steps 200 --rounds 5 "$@"
