#!/usr/bin/env python3
"""Image-folder loader benchmark (prints numbers; not a test).

1. Throughput: decode + training augmentation (random-resized crop to 224 + flip + normalise) of
   generated 500x375 JPEGs, demp's loader (`demp data bench-loader`, N decode threads) against
   torchvision's ImageFolder + DataLoader (PIL, N worker processes), paired: the rounds alternate
   between the two on the same folder with the same N. Prints images/s, images/s per core
   (per thread / per worker) and the median ratio demp / torchvision.
2. Memory: demp's peak RSS for an image folder of 10k and of 100k images. The big folders are
   hard links to the same few hundred generated JPEGs (distinct names, no extra disk space), so
   the loader lists, shuffles and decodes 100k files without 100k files' worth of disk.

usage: bench/image_loader.py [--demp build/demp] [--workers 1,2] [--batches 20] [--rounds 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image


def generate(root, n, classes=4, seed=0):
    rs = np.random.RandomState(seed)
    paths = []
    for k in range(n):
        c = k % classes
        d = os.path.join(root, "train", f"class{c}")
        os.makedirs(d, exist_ok=True)
        # a photo-like image: smooth colour fields plus noise (compresses like a photograph)
        y, x = np.mgrid[0:375, 0:500]
        f = rs.uniform(0.005, 0.05, 3)
        ph = rs.uniform(0, 6.28, 3)
        a = np.stack([127 + 100 * np.sin(f[i] * (x + (i + 1) * y) + ph[i]) for i in range(3)], -1)
        a = np.clip(a + rs.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
        p = os.path.join(d, f"{k:06d}.jpg")
        Image.fromarray(a).save(p, quality=90)
        paths.append(p)
    for c in range(classes):  # a small val/ (the loader wants one; not timed)
        d = os.path.join(root, "val", f"class{c}")
        os.makedirs(d, exist_ok=True)
        shutil.copy(paths[c], os.path.join(d, "v.jpg"))
    return paths


def link_folder(root, sources, n, classes=4):
    for k in range(n):
        d = os.path.join(root, "train", f"class{k % classes}")
        os.makedirs(d, exist_ok=True)
        os.link(sources[k % len(sources)], os.path.join(d, f"{k:07d}.jpg"))
    for c in range(classes):
        d = os.path.join(root, "val", f"class{c}")
        os.makedirs(d, exist_ok=True)
        os.link(sources[c], os.path.join(d, "v.jpg"))


def run_demp(demp, folder, workers, batch, batches):
    out = subprocess.run([demp, "data", "bench-loader", "--data", "imagefolder:" + folder,
                          "--decode-threads", str(workers), "--batch-size", str(batch),
                          "--batches", str(batches), "--warmup", "2"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


TORCH_SIDE = r"""
import sys, time, torch, torchvision
from torchvision import datasets, transforms as T
folder, workers, batch, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = datasets.ImageFolder(folder + "/train", transform=tf)
dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                 drop_last=True, persistent_workers=True, prefetch_factor=4)
it = iter(dl)
n = 0
for k in range(2 + batches):
    if k == 2:
        t0 = time.perf_counter()
    try:
        x, y = next(it)
    except StopIteration:
        it = iter(dl)
        x, y = next(it)
    if k >= 2:
        n += x.shape[0]
dt = time.perf_counter() - t0
print(n / dt)
"""


def run_torch(folder, workers, batch, batches):
    out = subprocess.run([sys.executable, "-c", TORCH_SIDE, folder, str(workers), str(batch),
                          str(batches)], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demp", default=os.path.join(os.path.dirname(__file__), "..", "build", "demp"))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=512, help="distinct generated JPEGs")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--memory-only", action="store_true", help="skip the throughput rounds")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="demp-bench-images-", dir=args.tmp)
    try:
        t = time.time()
        sources = generate(os.path.join(root, "base"), args.images)
        print(f"generated {args.images} JPEGs of 500x375 in {time.time() - t:.1f} s "
              f"({sum(os.path.getsize(p) for p in sources) / len(sources) / 1024:.0f} KiB each)")
        base = os.path.join(root, "base")
        print(f"cores: {os.cpu_count()} (shared machine)")
        for w in [] if args.memory_only else [int(x) for x in args.workers.split(",")]:
            ratios, d_all, t_all = [], [], []
            for r in range(args.rounds):
                d = run_demp(args.demp, base, w, args.batch, args.batches)["images_per_s"]
                tv = run_torch(base, w, args.batch, args.batches)
                ratios.append(d / tv)
                d_all.append(d)
                t_all.append(tv)
                print(f"workers {w} round {r}: demp {d:.0f} img/s ({d / w:.0f} per core) | "
                      f"torchvision {tv:.0f} img/s ({tv / w:.0f} per core) | ratio {d / tv:.2f}",
                      flush=True)
            print(f"workers {w}: median demp {statistics.median(d_all):.0f} img/s, torchvision "
                  f"{statistics.median(t_all):.0f} img/s, per core {statistics.median(d_all) / w:.0f} "
                  f"vs {statistics.median(t_all) / w:.0f}, median ratio {statistics.median(ratios):.2f}x",
                  flush=True)
        for n in (10000, 100000):
            folder = os.path.join(root, f"links{n}")
            link_folder(folder, sources, n)
            d = run_demp(args.demp, folder, 2, args.batch, args.batches)
            print(f"{n} images (hard links): peak RSS {d['peak_rss_mib']:.1f} MiB (after listing "
                  f"and loading {d['peak_rss_after_load_mib']:.1f} MiB), load {d['load_seconds']:.2f} s, "
                  f"{d['images_per_s']:.0f} img/s", flush=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
