#!/usr/bin/env python3
"""PyTorch reference of a demp training step, for the paired benchmark (`demp bench`).

Builds the *same* network from demp's architecture description (JSON written by demp bench)
as ordinary torch.nn modules (python/demp_load.py), and times forward + cross-entropy + backward + optimizer step on
synthetic data. Prints one JSON line: {"images_per_second": ...}.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

# The network is python/demp_load.py's DempNet: the same interpreter of demp's architecture
# description that loads exported models.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from demp_load import DempNet  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw", choices=["sgd", "sgdw", "adamw"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    arch = json.load(open(a.arch))
    net = DempNet(arch).train().to(dev)
    x = torch.randn(a.batch_size, arch["in_channels"], arch["in_height"], arch["in_width"], device=dev)
    y = torch.randint(arch["classes"], (a.batch_size,), device=dev)
    if cuda:
        # PyTorch's fast eager settings on a GPU: channels-last, cuDNN autotuning, fused optimizer.
        torch.backends.cudnn.benchmark = True
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fused = {"fused": True} if cuda else {}
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=5e-4, **fused)
    else:  # PyTorch has no decoupled SGDW; plain momentum SGD costs the same
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, **fused)
    bf16 = a.precision == "bf16"

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_second": a.steps * a.batch_size / dt, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
