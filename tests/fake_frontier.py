#!/usr/bin/env python3
"""Writes a made-up frontier directory (frontier.json and one run directory per run, in the
layout `demp train` writes) for the report tests: dense and eleven pruning series at three
levels, three seeds each, so that every plot of `demp report` has data and the palette is
stretched past twelve series. Standard library only; deterministic.

usage: fake_frontier.py OUT_DIR [--series N] [--seeds N]
"""
import json
import math
import os
import random
import sys

SERIES = [("DemP (ours)", "demp"), ("demp (paper)", "demp"), ("slimming", "slimming"),
          ("snap", "snap"), ("crop", "crop"), ("earlycrop", "earlycrop"), ("l1norm", "l1norm"),
          ("random", "random"), ("gradual magnitude", "magnitude"), ("gradual bn-scale", "bnscale"),
          ("scan", "scan"), ("extra", "extra")]
LEVELS = [0.25, 0.1, 0.05]
GROUPS = {"fc1": 512, "fc2": 256}
STEPS, EPOCH = 200, 50


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, sort_keys=True)
    os.replace(path + ".tmp", path)


def run(out, name, series, method, level, seed, k):
    rng = random.Random(f"{name}-{seed}")  # str seeds: the same numbers in every process
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    # What a method reaches: near its level, off by a little per method and per seed.
    keep = 1.0 if level is None else level * (0.85 + 0.1 * (k % 4) + rng.uniform(0, 0.04))
    units0 = sum(GROUPS.values())
    params0, flops0 = 535818, 535818 * 2
    quality = 0.9 - 0.004 * k - (0 if level is None else 0.02 * math.log(1 / keep))
    acc = quality + rng.gauss(0, 0.004)
    secs = 30.0 * (0.4 + 0.6 * keep) * (1 + 0.05 * k) + rng.uniform(0, 1)
    cfg = {"method": method, "seed": seed, "lambda": 0.01, "density": keep,
           "target-params": level if method == "demp" and level else 0,
           "l1-step": "loss" if series == "demp (paper)" else "prox"}
    write_json(os.path.join(d, "config.json"), cfg)
    rows, events = [], []
    units = units0
    for step in range(10, STEPS + 1, 10):
        frac = min(1.0, step / (0.6 * STEPS))
        target = int(units0 * (1 - (1 - keep) * frac))
        if method != "dense" and target < units and step % 40 == 0:
            events.append({"step": step, "reason": "dead units", "units_before": units,
                           "units_after": target, "params_after": int(params0 * target / units0),
                           "flops_after": int(flops0 * target / units0), "groups": {}})
            units = target
        t = step / STEPS
        row = {"step": step, "epoch": step / EPOCH, "lr": 0.01, "live_units": units,
               "params": int(params0 * units / units0), "flops": int(flops0 * units / units0),
               "elapsed_seconds": secs * t,
               "train_loss": 2.3 * math.exp(-3 * t) + 0.25 + rng.uniform(0, 0.02),
               "train_accuracy": 0.5 + 0.4 * t}
        if method in ("demp", "scan"):
            p = 0.01 * (k + 1) * (0.25 / keep) ** 0.5
            row["reg_lambda"] = p * (0.04 + 0.96 * math.sin(math.pi * min(t / 0.6, 1)) ** 2 + 1e-5)
            row["noise_std"] = 5e-5 * (0.04 + 0.96 * (1 - t) + 1e-5)
            row["last_scan"] = {"step": step - step % 40, "dead_units": max(0, units - target)}
        if step % EPOCH == 0:
            row["test_accuracy"] = acc - 0.3 * (1 - t) ** 2
            row["test_loss"] = 0.4
        rows.append(row)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(d, "log.txt"), "w") as f:
        f.write("fake run\n")
    per = {g: max(1, int(w * units / units0)) for g, w in GROUPS.items()}
    write_json(os.path.join(d, "summary.json"), {
        "status": "finished", "method": method, "model": "mlp", "width": 1.0,
        "dataset": "fashion-mnist", "seed": seed, "steps": STEPS, "test_accuracy": acc,
        "best_test_accuracy": acc, "units_initial": units0, "units_final": units,
        "params_initial": params0, "params_final": int(params0 * units / units0),
        "flops_initial": flops0, "flops_final": int(flops0 * units / units0),
        "live_units_per_group": per, "train_seconds": secs, "prune_events": events})


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    out = args[0]
    n_series = int(args[args.index("--series") + 1]) if "--series" in args else len(SERIES)
    n_seeds = int(args[args.index("--seeds") + 1]) if "--seeds" in args else 3
    os.makedirs(out, exist_ok=True)
    runs = []
    for seed in range(n_seeds):
        runs.append({"name": f"dense-s{seed}", "series": "dense", "method": "dense",
                     "level": None, "seed": seed})
        run(out, f"dense-s{seed}", "dense", "dense", None, seed, 0)
    for k, (series, method) in enumerate(SERIES[:n_series]):
        for level in LEVELS:
            for seed in range(n_seeds):
                name = f"{method}-{k}-p{level}-s{seed}"
                runs.append({"name": name, "series": series, "method": method, "level": level,
                             "seed": seed})
                run(out, name, series, method, level, seed, k)
    write_json(os.path.join(out, "frontier.json"),
               {"kind": "frontier", "levels": LEVELS, "seeds": list(range(n_seeds)), "runs": runs})


if __name__ == "__main__":
    main()
