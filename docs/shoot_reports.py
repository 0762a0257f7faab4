"""Screenshots of jaxrobust reports in headless Chromium, to look at a page as a reader does.

    python docs/shoot_reports.py runs/demo/report.html runs/cf/report.html --out shots

For each report and width (1400 and 900 px by default) it writes the whole page as one
PNG (`<folder>_<width>.png`, cut below the last non-white row) and the same page cut
into screen-high tiles (`<folder>_<width>_<k>.png`) that an image viewer shows at full
size. It needs a Chromium or Chrome binary (`--chromium`, default: the first of
chromium, chromium-browser, google-chrome on PATH; Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic")


def shoot(chromium: str, page: str, png: str, width: int, height: int = 30000) -> Image.Image:
    """The page rendered `width` px wide, cut below its last non-white row."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={png}",
                        "--virtual-time-budget=20000",
                        "file://" + os.path.abspath(page)],
                       check=True, capture_output=True, timeout=120)
    image = Image.open(png).convert("RGB")
    ink = np.nonzero((np.asarray(image) < 250).any(axis=(1, 2)))[0]
    image = image.crop((0, 0, width, int(ink[-1]) + 20 if len(ink) else 1))
    image.save(png)
    return image


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="report.html files")
    parser.add_argument("--out", default="shots", help="folder for the PNGs")
    parser.add_argument("--widths", type=int, nargs="+", default=[1400, 900])
    parser.add_argument("--tile", type=int, default=1600, help="tile height in px")
    parser.add_argument("--chromium", default=None, help="the browser binary")
    args = parser.parse_args(argv)
    chromium = args.chromium or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None)
    if chromium is None:
        parser.error("no Chromium on PATH: install it (apt-get install chromium) or pass "
                     "--chromium.")
    os.makedirs(args.out, exist_ok=True)
    for page in args.reports:
        stem = os.path.basename(os.path.dirname(os.path.abspath(page))) or "report"
        for width in args.widths:
            png = os.path.join(args.out, f"{stem}_{width}.png")
            image = shoot(chromium, page, png, width)
            tiles = range(0, image.height, args.tile)
            for k, top in enumerate(tiles):
                image.crop((0, top, width, min(top + args.tile, image.height))).save(
                    os.path.join(args.out, f"{stem}_{width}_{k}.png"))
            print(f"{png}: {width} x {image.height} px, {len(tiles)} tiles")


if __name__ == "__main__":
    main()
