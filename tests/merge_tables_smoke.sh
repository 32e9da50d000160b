#!/usr/bin/env bash
# scripts/merge_frontier_tables: pools two frontier tables of disjoint seeds exactly (from their
# printed mean ± sample std), recomputes Δ dense, speed-up and best, and refuses what is not a table.
MERGE=$(cd "$(dirname "$0")/.." && pwd)/scripts/merge_frontier_tables
. "$(dirname "$0")/smoke_lib.sh" "$MERGE"
cd "$TMP" || exit 1
H='| method | level | seeds | test acc % | Δ dense | params % | FLOPs % | units % | train s | speed-up | best |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
# seeds 0 and 1: 91.29 and 92.71 (mean 92.00, std 1.00 to 2 decimals); seed 2: 93.00
cat > a.md <<T
$H
| dense | - | 2/2 | 94.00 ± 0.00 | +0.00 | 100.00 | 100.00 | 100.00 | 600.0 | 1.00x |  |
| **A** | 25% | 2/2 | **92.00 ± 1.00** | -2.00 | 25.00 | 50.00 | 60.00 | 300.0 | 2.00x | best |
| B | 25% | 2/2 | 91.00 ± 0.00 | -3.00 | 24.00 | 40.00 | 50.00 | 200.0 | 3.00x |  |
| C | 25% | 2/2 | 99.00 ± 0.00 | +5.00 | 40.00 | 90.00 | 90.00 | 500.0 | 1.20x | missed |
T
cat > b.md <<T
$H
| dense | - | 1/1 | 94.00 ± 0.00 | +0.00 | 100.00 | 100.00 | 100.00 | 300.0 | 1.00x |  |
| A | 25% | 1/1 | 93.00 ± 0.00 | +0.00 | 26.00 | 50.00 | 60.00 | 300.0 | 1.00x |  |
| **B** | 25% | 1/1 | **93.50 ± 0.00** | +0.00 | 24.00 | 40.00 | 50.00 | 100.0 | 3.00x | best |
| C | 25% | 1/1 | 99.00 ± 0.00 | +5.00 | 40.00 | 90.00 | 90.00 | 500.0 | 0.60x | missed |
T
"$MERGE" a.md b.md > m.md 2> err.txt && ok || bad "merge failed: $(cat err.txt)"
check "A pooled over 3 seeds: 92.33 ± 0.91, best" grep -q '^| \*\*A\*\* | 25% | 3/3 | \*\*92.33 ± 0.91\*\* | -1.67 | 25.33 .* | best |$' m.md
check "B pooled: 91.83 ± 1.44, best on b.md alone, not now" grep -q '^| B | 25% | 3/3 | 91.83 ± 1.44 | -2.17 | 24.00 | 40.00 | 50.00 | 166.7 | 3.00x |  |$' m.md
check "train s seed-weighted, speed-up from dense's" grep -q '^| dense | - | 3/3 | 94.00 ± 0.00 | +0.00 | 100.00 | 100.00 | 100.00 | 500.0 | 1.00x |  |$' m.md
check "C is above its level: never best" grep -q '^| C | 25% | 3/3 | 99.00 ± 0.00 .* | missed |$' m.md
"$MERGE" --no-times a.md b.md > n.md && ok || bad "--no-times failed"
check "--no-times: no seconds, no speed-up" grep -q '^| B | 25% | 3/3 | 91.83 ± 1.44 | -2.17 | 24.00 | 40.00 | 50.00 | - | - |  |$' n.md
# refusals: one line with a hint, exit 2
echo "hello" > x.md
"$MERGE" a.md x.md > /dev/null 2> e1.txt; rc=$?
check "not a table: exit 2 (got $rc)" test $rc -eq 2
check "not a table: says so" grep -q "x.md is not a frontier table" e1.txt
"$MERGE" a.md > /dev/null 2> e2.txt; rc=$?
check "one table: refused (got $rc)" test $rc -eq 2
"$MERGE" a.md missing.md > /dev/null 2> e3.txt; rc=$?
check "missing file: names it" grep -q "cannot read missing.md" e3.txt
finish
