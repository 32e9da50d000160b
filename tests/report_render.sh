#!/usr/bin/env bash
# The HTML report as a browser shows it: `demp report` on a made-up frontier directory (dense and
# twelve series, three levels, three seeds: tests/fake_frontier.py), opened in headless Chromium.
# Checks that every figure is an inline SVG that the browser laid out at a real size and drew
# into, that the summary table has a row per setting, and that a screenshot of the page is not
# blank. Skips (exit 77, the reason printed) where chromium is not installed, unless
# DEMP_REQUIRE_CHROMIUM=1 or CI is set (scripts/test installs chromium and sets the former: in
# CI this check must run, not quietly skip).
# DEMP_REPORT_SHOT=PATH keeps the screenshot. About 10 s.
. "$(dirname "$0")/smoke_lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
case $DEMP in /*) ;; *) DEMP=$PWD/$DEMP ;; esac  # a relative path would break after the cd
cd "$TMP" || exit 1
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
  if [ "${DEMP_REQUIRE_CHROMIUM:-0}" = 1 ] || [ -n "${CI:-}" ]; then
    echo "report_render: FAIL: chromium is not installed, and in CI (or with DEMP_REQUIRE_CHROMIUM=1) this check must run (apt-get install chromium)"
    exit 1
  fi
  echo "report_render: SKIPPED: chromium is not installed (Debian: apt-get install chromium; scripts/test installs it)"
  exit 77
fi
if ! command -v python3 > /dev/null; then
  echo "report_render: python3 is needed to make the test data and read the screenshot"
  exit 1
fi

python3 "$HERE/fake_frontier.py" F || { echo "FAIL: fake_frontier.py"; exit 1; }
if ! "$DEMP" report F --out R --title "render check" > report.txt 2>&1; then
  bad "report failed: $(cat report.txt)"
  finish
  exit
fi
ok
# Thirty-six settings share three levels: the curves over training come one set per level.
FIGURES=(accuracy_vs_params accuracy_vs_flops accuracy_vs_units accuracy_vs_time layer_widths)
for level in 25pct 10pct 5pct; do
  for p in live_units dead_units lambda_schedule noise_schedule train_loss test_accuracy \
    accuracy_vs_wallclock; do
    FIGURES+=("${p}_$level")
  done
done

# A copy of the page with a probe at its end: what the browser made of each figure and table,
# written into the DOM, which --dump-dom then prints.
sed 's|</body>|<script src="probe.js"></script>\n</body>|' R/index.html > R/probe.html
cat > R/probe.js <<'JS'
const figs = [...document.querySelectorAll('figure')].map(f => {
  const svg = f.querySelector(':scope > svg');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  let drawn = 0;
  if (svg) for (const e of svg.querySelectorAll('path, polyline, line, use, text')) {
    const b = e.getBBox ? e.getBBox() : {width: 0, height: 0};
    if (b.width > 0 || b.height > 0) drawn++;
  }
  return {id: f.id, svg: !!svg, width: Math.round(box.width), height: Math.round(box.height), drawn};
});
const rows = document.querySelectorAll('table#summary tr').length;
const out = document.createElement('pre');
out.id = 'render-check';
out.textContent = JSON.stringify({figures: figs, summary_rows: rows});
document.body.appendChild(out);
JS
CHROME=("$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage
  --user-data-dir="$TMP/chrome" --allow-file-access-from-files)
timeout 120 "${CHROME[@]}" --dump-dom "file://$TMP/R/probe.html" > dom.html 2> chrome-dom.txt
grep -o '<pre id="render-check">[^<]*</pre>' dom.html | sed 's/<[^>]*>//g; s/&quot;/"/g' > check.json
if [ -s check.json ]; then
  ok
else
  bad "no probe result in the DOM (chromium: $(tail -2 chrome-dom.txt))"
fi
python3 - check.json "${FIGURES[@]}" > probe.txt <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
seen = {f["id"]: f for f in r["figures"]}
for name in sys.argv[2:]:
    f = seen.get(name)
    if f is None:
        print(f"FAIL: figure {name} is not on the page")
    elif not f["svg"]:
        print(f"FAIL: figure {name} has no inline <svg>")
    elif f["width"] < 400 or f["height"] < 200:
        print(f"FAIL: figure {name} laid out at {f['width']}x{f['height']} px")
    elif f["drawn"] < 20:
        print(f"FAIL: figure {name} has only {f['drawn']} visible elements")
    else:
        print(f"ok {name} {f['width']}x{f['height']} px, {f['drawn']} elements")
extra = sorted(set(seen) - set(sys.argv[2:]))
print(f"FAIL: unexpected figures {extra}" if extra else "ok no other figure")
# dense + 12 series x 3 levels, and the header
print("ok summary table" if r["summary_rows"] == 38 else f"FAIL: summary table has {r['summary_rows']} rows, not 38")
PY
while read -r status rest; do
  if [ "$status" = ok ]; then ok; else bad "$rest"; fi
done < probe.txt

# The page itself (no probe), as a picture: a PNG, and not blank — plots draw in colour.
timeout 120 "${CHROME[@]}" --hide-scrollbars --screenshot="$TMP/shot.png" --window-size=1200,4000 \
  "file://$TMP/R/index.html" > chrome-shot.txt 2>&1
python3 - shot.png > shot.txt <<'PY'
# Not blank, without decoding every pixel (pure Python would take a minute): a row of one colour
# that repeats the row above is, after its first pixel, all zeros under PNG's filters 1-4 and one
# repeated pixel under filter 0. A row that is neither has something drawn on it.
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, "unexpected PNG format"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp + 1
assert len(raw) == h * stride, "truncated PNG"
def drawn(y):
    row = raw[y * stride + 1:(y + 1) * stride]
    return row != row[:bpp] * w if raw[y * stride] == 0 else bool(row[bpp:].strip(b"\0"))
inked = sum(1 for y in range(h) if drawn(y))
print(f"{w}x{h} px, {100 * inked / h:.0f}% of the rows drawn on")
sys.exit(0 if inked > 0.2 * h else 1)
PY
if [ $? -eq 0 ]; then ok; else bad "screenshot blank or missing: $(cat shot.txt) $(tail -2 chrome-shot.txt)"; fi
echo "report_render: screenshot $(cat shot.txt)"
if [ -n "${DEMP_REPORT_SHOT:-}" ] && [ -s shot.png ]; then cp shot.png "$DEMP_REPORT_SHOT"; fi
finish
