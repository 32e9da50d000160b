#!/usr/bin/env python3
"""PyTorch reference of a demp training step, for the paired benchmark (`demp bench`).

Builds the *same* network from demp's architecture description (JSON written by demp bench),
as ordinary torch.nn modules, and times forward + cross-entropy + backward + optimizer step on
synthetic data. Prints one JSON line: {"images_per_second": ...}.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ArchNet(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.arch = arch
        g = arch["groups"]
        self.layers = nn.ModuleList()
        for l in arch["layers"]:
            cin, cout = g[l["in_group"]]["width"], g[l["out_group"]]["width"]
            if l["kind"] == "conv":
                core = nn.Conv2d(cin, cout, l["kernel"], l["stride"], l["padding"], bias=l["bias"])
                bn = nn.BatchNorm2d(cout) if l["bn"] else None
            else:
                core = nn.Linear(cin * l["in_block"], cout, bias=l["bias"])
                bn = nn.BatchNorm1d(cout) if l["bn"] else None
            self.layers.append(nn.ModuleDict({"core": core, **({"bn": bn} if bn else {})}))
        self.skips = []
        for i, s in enumerate(arch["skips"]):
            self.register_buffer(f"skip_src{i}", torch.tensor(s["src"], dtype=torch.long))
            self.register_buffer(f"skip_dst{i}", torch.tensor(s["dst"], dtype=torch.long))
            identity = s["src"] == list(range(len(s["src"]))) and s["dst"] == s["src"]
            self.skips.append(identity)

    def forward(self, x):
        v = [None] * self.arch["num_slots"]
        v[0] = x
        for op in self.arch["program"]:
            k, a, b, c = op["op"], op["a"], op["b"], op["c"]
            if k == "layer":
                m = self.layers[a]
                y = m["core"](v[b])
                v[c] = m["bn"](y) if "bn" in m else y
            elif k == "relu":
                v[a] = F.relu(v[a], inplace=True)
            elif k == "maxpool":
                v[a] = F.max_pool2d(v[a], op["k"], op["s"], op["p"], ceil_mode=bool(b))
            elif k == "gap":
                v[a] = v[a].mean((2, 3), keepdim=True)
            elif k == "flatten":
                v[a] = v[a].flatten(1)
            elif k == "copy":
                v[a] = v[b]
            elif k == "add":
                if c < 0 or self.skips[c]:
                    v[a] = v[a] + v[b]
                else:
                    src, dst = getattr(self, f"skip_src{c}"), getattr(self, f"skip_dst{c}")
                    v[a] = v[a].index_add(1, dst, v[b].index_select(1, src))
        return v[0]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw", choices=["sgd", "sgdw", "adamw"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    arch = json.load(open(a.arch))
    net = ArchNet(arch).train()
    x = torch.randn(a.batch_size, arch["in_channels"], arch["in_height"], arch["in_width"])
    y = torch.randint(arch["classes"], (a.batch_size,))
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=5e-4)
    else:  # PyTorch has no decoupled SGDW; plain momentum SGD costs the same
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_second": a.steps * a.batch_size / dt, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
