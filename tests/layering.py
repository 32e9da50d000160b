#!/usr/bin/env python3
"""The folders of src/demp in layer order: a folder includes only folders below it.

    common < data, dist < nn < prune < train < methods < report, export < cli

Folders on one level (data and dist, report and export) do not include each other either.
Usage: layering.py SRC_DIR [--graph]  (SRC_DIR is src/demp). Exits 1, naming every upward edge
with the file and line that makes it, when the order is broken or a folder is not in the list.
`layering.py --self-test` checks the checker on a made-up tree with one upward include.
"""
import os
import re
import sys
import tempfile

LEVELS = [["common"], ["data", "dist"], ["nn"], ["prune"], ["train"], ["methods"],
          ["report", "export"], ["cli"]]
LEVEL = {f: i for i, fs in enumerate(LEVELS) for f in fs}
INCLUDE = re.compile(r'^\s*#\s*include\s+"demp/([a-z_]+)/')


def edges(src):
    """(from_folder, to_folder, file, line number) for every cross-folder include."""
    out = []
    for folder in sorted(os.listdir(src)):
        d = os.path.join(src, folder)
        if not os.path.isdir(d):
            continue
        for root, _, files in os.walk(d):
            for name in sorted(files):
                if not name.endswith((".h", ".hpp", ".cpp", ".cu")):
                    continue
                path = os.path.join(root, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m and m.group(1) != folder:
                            out.append((folder, m.group(1), os.path.relpath(path, src), n))
    return out


def check(src, show_graph=False):
    found = edges(src)
    problems = []
    folders = {e[0] for e in found} | {e[1] for e in found} | {
        f for f in os.listdir(src) if os.path.isdir(os.path.join(src, f))}
    for f in sorted(folders - LEVEL.keys()):
        problems.append(f"src/demp/{f}/ is not in the layer order; add it to LEVELS in "
                        "tests/layering.py (and DESIGN.md's dependency order)")
    for a, b, path, n in found:
        if a in LEVEL and b in LEVEL and LEVEL[b] >= LEVEL[a]:
            kind = "upward" if LEVEL[b] > LEVEL[a] else "sideways"
            problems.append(f"{kind} include {a} -> {b}: src/demp/{path}:{n}")
    if show_graph:
        pairs = sorted({(a, b) for a, b, _, _ in found}, key=lambda p: (LEVEL.get(p[0], 99), p))
        for a, b in pairs:
            count = sum(1 for e in found if e[0] == a and e[1] == b)
            print(f"{a:8} -> {b:8} ({count} include{'s' if count != 1 else ''})")
    return problems


def self_test():
    with tempfile.TemporaryDirectory() as t:
        for folder, text in [("train", '#include "demp/nn/model.h"\n'),
                             ("nn", '#include "demp/common/error.h"\n'),
                             ("common", "")]:
            os.makedirs(os.path.join(t, folder))
            with open(os.path.join(t, folder, "x.cpp"), "w") as f:
                f.write(text)
        assert check(t) == [], check(t)
        with open(os.path.join(t, "nn", "y.h"), "w") as f:
            f.write('// a comment\n  #include "demp/train/trainer.h"\n')
        got = check(t)
        assert got == ["upward include nn -> train: src/demp/nn/y.h:2"], got
        os.makedirs(os.path.join(t, "extra"))
        assert any("extra/ is not in the layer order" in p for p in check(t)), check(t)
    print("layering self-test: passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(sys.argv[1], "--graph" in sys.argv[2:])
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"layering: {len(problems)} problem(s); hint: move the shared piece down to the lower "
              "folder, or pass what the lower folder needs in as an argument", file=sys.stderr)
        return 1
    print("layering: every include goes down the layer order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
