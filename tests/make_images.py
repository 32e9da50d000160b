#!/usr/bin/env python3
"""Small generated image trees for tests/test_images.cpp (PIL from the project's .venv).

  make_images.py tree OUT        train/ and val/ with JPEG, PNG, odd sizes, greyscale, palette,
                                 16-bit, alpha and CMYK files; OUT/expect/<name>.rgb|.l hold PIL's
                                 decoded pixels (convert("RGB") / convert("L")) for each file
  make_images.py bad OUT         a good tree plus bad files: truncated JPEG/PNG, 0 bytes, text
  make_images.py grey OUT N      N greyscale PNGs per class (2 classes), train/ only
  make_images.py imagenet OUT    3 synset folders of small JPEGs, train/ and val/
  make_images.py transforms OUT  one RGB PNG and torchvision's outputs on it (see check_transforms)
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image


def rng_image(rs, w, h, mode="RGB"):
    # smooth gradients + noise: JPEG-friendly but not constant
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    a = np.clip(base + rs.randint(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def save(img, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kw)


GREY16_SOURCE = {}


def save16(img8, path):
    # 16-bit greyscale: each 8-bit value v stored as v * 257, so the high byte is v again. (PIL's
    # own convert() of I;16 clips at 255 instead of scaling: the expectation is the 8-bit source.)
    GREY16_SOURCE[path] = np.asarray(img8)
    save(Image.fromarray(np.asarray(img8).astype(np.uint16) * 257), path)


def expect(out, rel, path):
    d = os.path.join(out, "expect")
    os.makedirs(d, exist_ok=True)
    if path in GREY16_SOURCE:
        lum = GREY16_SOURCE[path]
        rgb = np.repeat(lum[:, :, None], 3, axis=2)
    else:
      with Image.open(path) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"))
        lum = np.asarray(im.convert("L"))
    name = rel.replace("/", "_")
    rgb.tofile(os.path.join(d, name + ".rgb"))
    lum.tofile(os.path.join(d, name + ".l"))


def tree(out):
    rs = np.random.RandomState(0)
    files = []
    for split, n in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("cat", "dog", "eel")):
            for k in range(n):
                w, h = 37 + 11 * k + c, 23 + 5 * k + 2 * c  # odd sizes
                base = f"{split}/{cls}/{k}"
                files.append((base + ".jpg", lambda p, w=w, h=h: save(rng_image(rs, w, h), p, quality=90)))
                files.append((base + ".png", lambda p, w=w, h=h: save(rng_image(rs, w, h), p)))
    # the special kinds, in train/cat
    files += [
        ("train/cat/grey.jpg", lambda p: save(rng_image(rs, 41, 29, "L"), p, quality=90)),
        ("train/cat/grey.png", lambda p: save(rng_image(rs, 40, 30, "L"), p)),
        ("train/cat/palette.png", lambda p: save(rng_image(rs, 33, 27).convert("P"), p)),
        ("train/cat/alpha.png", lambda p: save(rng_image(rs, 35, 25).convert("RGBA"), p)),
        ("train/cat/grey16.png", lambda p: save16(rng_image(rs, 31, 21, "L"), p)),
        ("train/dog/cmyk.jpg", lambda p: save(rng_image(rs, 39, 26).convert("CMYK"), p, quality=95)),
        ("train/dog/UPPER.JPEG", lambda p: save(rng_image(rs, 30, 30), p, quality=90)),
        ("train/dog/notes.txt", lambda p: open(p, "w").write("not an image, ignored by extension")),
    ]
    for rel, make in files:
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make(path)
        if not rel.endswith(".txt"):
            expect(out, rel, path)


def bad(out):
    rs = np.random.RandomState(1)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for k in range(4):
                save(rng_image(rs, 20 + k, 18), os.path.join(out, split, cls, f"{k}.png"))
    buf = io.BytesIO()
    rng_image(rs, 64, 48).save(buf, "JPEG", quality=90)
    open(os.path.join(out, "train/a/truncated.jpg"), "wb").write(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    rng_image(rs, 64, 48).save(buf, "PNG")
    open(os.path.join(out, "train/b/truncated.png"), "wb").write(buf.getvalue()[: len(buf.getvalue()) // 2])
    open(os.path.join(out, "train/a/empty.png"), "wb").close()
    open(os.path.join(out, "train/b/text.jpg"), "w").write("this is not a JPEG\n")


def grey(out, n):
    rs = np.random.RandomState(2)
    for c in ("0", "1"):
        for k in range(n):
            img = rng_image(rs, 28, 28, "L")
            if c == "1":  # a learnable difference
                a = np.asarray(img).copy()
                a[:, :14] //= 4
                img = Image.fromarray(a, "L")
            save(img, os.path.join(out, "train", c, f"{k:03d}.png"))


def imagenet(out):
    rs = np.random.RandomState(3)
    for split, n in (("train", 4), ("val", 2)):
        for syn in ("n01440764", "n01443537", "n01484850"):
            for k in range(n):
                save(rng_image(rs, 48 + 3 * k, 40), os.path.join(out, split, syn, f"{syn}_{k}.JPEG"),
                     format="JPEG", quality=90)


def transforms(out):
    """One RGB PNG (odd size) and torchvision.transforms.functional outputs on its float pixels:
    resize(shorter side R, antialias) + center_crop(S), and resized_crop for fixed boxes."""
    import torch
    import torchvision.transforms.functional as F

    rs = np.random.RandomState(4)
    os.makedirs(out, exist_ok=True)
    a = rs.randint(0, 256, (61, 97, 3)).astype(np.uint8)
    # some structure too, so that interpolation errors show
    a[:, :, 0] = np.clip(a[:, :, 0] // 2 + np.arange(97)[None, :] * 2, 0, 255)
    Image.fromarray(a, "RGB").save(os.path.join(out, "img.png"))
    t = torch.from_numpy(a).permute(2, 0, 1).to(torch.float32)
    cases = []
    for size, resize in ((32, 36), (24, 27), (56, 64), (112, 128)):  # down- and up-sampling
        y = F.center_crop(F.resize(t, [resize], antialias=True), [size])
        name = f"eval_{size}_{resize}.f32"
        y.numpy().astype(np.float32).tofile(os.path.join(out, name))
        cases.append({"kind": "eval", "size": size, "resize": resize, "file": name})
    for (top, left, h, w, size) in ((3, 5, 40, 60, 24), (0, 0, 61, 97, 32), (10, 20, 17, 23, 32),
                                    (7, 1, 50, 33, 16), (30, 60, 31, 37, 64)):
        y = F.resized_crop(t, top, left, h, w, [size, size], antialias=True)
        name = f"crop_{top}_{left}_{h}_{w}_{size}.f32"
        y.numpy().astype(np.float32).tofile(os.path.join(out, name))
        cases.append({"kind": "crop", "top": top, "left": left, "height": h, "width": w,
                      "size": size, "file": name})
    json.dump(cases, open(os.path.join(out, "cases.json"), "w"))


def rrc_check(path):
    """Replays the draws demp recorded through torchvision's RandomResizedCrop.get_params and
    compares the boxes. Input JSON: [{height, width, scale, ratio, draws, box: [i, j, h, w]}]."""
    import torch
    from torchvision.transforms import RandomResizedCrop

    cases = json.load(open(path))
    bad_cases = 0
    for c in cases:
        draws = list(c["draws"])
        real_empty = torch.empty

        class Fake:
            def __init__(self, *a, **k):
                pass

            def uniform_(self, lo, hi):
                u = draws.pop(0)
                return torch.tensor([lo + (hi - lo) * u], dtype=torch.float32)

        def fake_randint(lo, hi, size):
            v = int(draws.pop(0))
            assert lo <= v < hi, (lo, v, hi)
            return torch.tensor([v])

        torch_empty, torch_randint = torch.empty, torch.randint
        torch.empty, torch.randint = (lambda *a, **k: Fake()), fake_randint
        try:
            img = real_empty(3, c["height"], c["width"])
            got = RandomResizedCrop.get_params(img, c["scale"], c["ratio"])
        finally:
            torch.empty, torch.randint = torch_empty, torch_randint
        if list(got) != c["box"] or draws:
            bad_cases += 1
            print("mismatch", c, "torchvision", got, "left", draws)
    print(f"rrc cases {len(cases)} mismatches {bad_cases}")
    return 1 if bad_cases else 0


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "tree":
        tree(out)
    elif kind == "bad":
        bad(out)
    elif kind == "grey":
        grey(out, int(sys.argv[3]))
    elif kind == "imagenet":
        imagenet(out)
    elif kind == "transforms":
        transforms(out)
    elif kind == "rrc":
        sys.exit(rrc_check(out))
    else:
        sys.exit(f"unknown kind {kind}")
