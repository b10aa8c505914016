"""Screenshots of the HTML report in headless Chromium, to look at it as a reader would.

    python reports/screenshot.py [reports/out/procedural_vs_factual.html]   # or: make screenshot

Renders the page at 1280 px wide, tall enough for the whole report, with the network off. The result
is cut into screen-sized PNGs, ``reports/out/screenshot-NN.png``, which any image viewer opens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

WIDTH, HEIGHT, PAGE = 1280, 16000, 1400
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]


def main(argv: list[str]) -> int:
    page = Path(argv[0] if argv else "reports/out/procedural_vs_factual.html").resolve()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        print("screenshot: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if not page.is_file():
        print(f"screenshot: {page}: no such file (run the report stage first)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.png"
        subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile", f"--screenshot={full}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        image = Image.open(full).convert("RGB")
        # trim the blank space below the end of the page
        bbox = Image.eval(image, lambda v: 255 - v).getbbox()
        image = image.crop((0, 0, WIDTH, min(HEIGHT, (bbox[3] if bbox else HEIGHT) + 20)))
        for old in page.parent.glob("screenshot-*.png"):
            old.unlink()
        for i, top in enumerate(range(0, image.height, PAGE), start=1):
            out = page.parent / f"screenshot-{i:02d}.png"
            image.crop((0, top, WIDTH, min(top + PAGE, image.height))).save(out)
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
