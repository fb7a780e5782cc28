"""Memory stays bounded on a 10,000 × 10,000 JPEG thanks to the --max-side cap (JPEG draft decoding).

Decoded at full size the image alone would take 400 MB in Pillow (RGBX) plus 1.2 GB as a float tensor,
and the ViT would see 1.56 M patches. With the default working scale (found.engine.DEFAULT_MAX_SIDE) it is
decoded at 1/8 scale, the model sees that size, and only the full-size uint8 mask is written. The bound checked here,
1.5 GB peak RSS for the whole `found segment` process (interpreter + torch included), is generous;
it measured ≈0.5 GB when written. Pillow's decompression-bomb guard (2 × 89.5 Mpx) is left as is:
100 Mpx is inside the warning range, which the loader accepts quietly because the cap applies.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import tiny  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # this test's own 100 Mpx images

SIDE = 10_000
LIMIT_BYTES = 1.5e9

#: Runs the CLI in a child of this wrapper and prints the child's peak RSS (ru_maxrss is in KiB on Linux),
#: so earlier subprocesses of the test session do not count.
WRAPPER = """
import json, resource, subprocess, sys
p = subprocess.run([sys.executable, "-m", "found", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "stderr": p.stderr,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


@pytest.mark.slow
def test_10k_jpeg_runs_in_bounded_memory(tmp_path: Path, tiny) -> None:
    big = tmp_path / "big.jpg"
    im = Image.linear_gradient("L").resize((SIDE, SIDE)).convert("RGB")  # ~400 MB, in this process only
    im.save(big, quality=75)
    del im
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", WRAPPER, "segment", str(big), "-o", str(out), "--mask", "--boxes", *tiny.args()],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0, res["stderr"]
    assert "Traceback" not in res["stderr"]
    from found.engine import DEFAULT_MAX_SIDE

    side = DEFAULT_MAX_SIDE
    assert f"downscaled: {big} ({SIDE}×{SIDE} → {side}×{side})" in res["stderr"]
    peak = res["maxrss_kib"] * 1024
    print(f"peak RSS of found segment on a {SIDE}×{SIDE} JPEG: {peak / 1e9:.2f} GB")
    assert peak < LIMIT_BYTES, f"peak RSS {peak / 1e9:.2f} GB"
    with Image.open(out / "big_mask.png") as m:
        assert m.size == (SIDE, SIDE)  # masks are scaled back to the file's size
    rec = json.loads((out / "boxes.json").read_text())["images"][0]
    assert rec["width"] == SIDE and rec["processed_size"] == [side, side]
