"""Reads demp's TensorBoard events back with the tensorboard package's own reader and checks them
against the run's metrics.jsonl: every row's step under the documented tags, with its values.

usage: check_tensorboard.py TB_DIR RUN_DIR [--expect-tag TAG ...]
Exit 0 when everything matches; prints each mismatch otherwise.
"""
import json
import math
import sys

from tensorboard.backend.event_processing import event_accumulator

# metrics.jsonl key -> tag (README, "TensorBoard")
TAGS = {
    "lr": "train/lr",
    "epoch": "train/epoch",
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "test_accuracy": "eval/test_acc",
    "test_loss": "eval/test_loss",
    "val_accuracy": "eval/val_acc",
    "val_loss": "eval/val_loss",
    "live_units": "units/total",
    "params": "size/params",
    "flops": "size/flops",
    "elapsed_seconds": "time/elapsed_seconds",
    "reg_lambda": "prune/lambda",
    "noise_std": "prune/sigma",
}


def main():
    tb_dir, run_dir = sys.argv[1], sys.argv[2]
    expect_tags = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--expect-tag"]
    acc = event_accumulator.EventAccumulator(tb_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    got = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
    counts = {t: len(acc.Scalars(t)) for t in tags}
    rows = [json.loads(l) for l in open(run_dir + "/metrics.jsonl") if l.strip()]
    bad = []

    def check(tag, step, want):
        have = got.get(tag, {}).get(step)
        if have is None:
            bad.append(f"{tag} missing at step {step}")
        elif not math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-30):
            bad.append(f"{tag} at step {step}: {have} != {want}")

    prev = None
    for r in rows:
        s = r["step"]
        for k, tag in TAGS.items():
            if k in r:
                check(tag, s, r[k])
        for g, w in r.get("live_units_per_group", {}).items():
            check("units/" + g, s, w)
        if "last_scan" in r:
            check("prune/dead_units", s, r["last_scan"]["dead_units"])
        if prev is not None and s > prev["step"]:
            want = (r["elapsed_seconds"] - prev["elapsed_seconds"]) / (s - prev["step"])
            check("time/step_seconds", s, want)
        prev = r
    # each row once (a resumed run's events are not doubled), and nothing beyond the rows
    n_loss = sum(1 for r in rows if "train_loss" in r)
    if counts.get("train/loss") != n_loss:
        bad.append(f"train/loss has {counts.get('train/loss')} events, metrics.jsonl {n_loss} rows")
    for t in expect_tags:
        if t not in tags:
            bad.append(f"tag {t} missing (tags: {sorted(tags)})")
    for b in bad[:20]:
        print("MISMATCH:", b)
    print(f"{len(rows)} rows, {len(tags)} tags, {len(bad)} mismatches")
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
