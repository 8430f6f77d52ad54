#!/usr/bin/env python3
"""build_photo_dataset.py: 64x64 RGB crops of freely licensed photos shipped by Debian 12 -> .npz, for the
photo denoising prior (model 2).

Sources (Debian packages, unpacked with `apt-get download` + `dpkg -x` into --cache, nothing installed):
  - mate-backgrounds 1.26.0: nature/*.jpg (12 photographs, GPL-2+, authors in the package's copyright
    file) and abstract/Elephants.jpg (a photograph, GPL-2+);
  - python3-skimage 0.19.3: the colour photographs astronaut (public domain, NASA), chelsea (CC0),
    coffee (CC0), rocket (public domain, SpaceX), hubble_deep_field (public domain, NASA), retina (CC0),
    ihc (no known copyright restrictions), and the CC0 grey textures brick, grass, gravel and camera
    (CC0), used as grey RGB. motorcycle_* is left out: its licence is not stated.
Held out (whole photographs, never cropped into the training set): coffee, LadyBird, Storm.

Crops: each photograph is area-downscaled by 2^k (k >= 1 for JPEGs, whose native 8x8 blocking a denoising
prior must not learn; k >= 0 for PNGs) while its short side stays >= --min-side; from each level,
round(--density * W*H / 64^2) random 64x64 crops, dropping near-flat ones (std < --min-std in [0, 1]
units: black sky, studio backgrounds). Crops are stored as they are; train.py --dihedral applies the 8
flips/rotations on the fly, so the file stays small enough to carry to the GPU machine (< 40 MB).

Output (.npz, uint8): train (N, 64, 64, 3), heldout (M, 64, 64, 3), meta (JSON: sources, licences, counts).

Usage: python3 tools/train/build_photo_dataset.py --out /work/cache/photo64.npz
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_emoji_dataset import preview_grid  # noqa: E402

MATE = "usr/share/backgrounds/mate"
SKI = "usr/lib/python3/dist-packages/skimage/data"
# (path under the unpacked tree, licence)
SOURCES = [(p, "GPL-2+ (mate-backgrounds)") for p in [
    f"{MATE}/nature/{n}.jpg" for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow",
                                       "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")]
    + [f"{MATE}/abstract/Elephants.jpg"]] + [
    (f"{SKI}/astronaut.png", "public domain (NASA)"), (f"{SKI}/chelsea.png", "CC0"),
    (f"{SKI}/coffee.png", "CC0"), (f"{SKI}/rocket.jpg", "public domain (SpaceX)"),
    (f"{SKI}/hubble_deep_field.jpg", "public domain (NASA)"), (f"{SKI}/retina.jpg", "CC0"),
    (f"{SKI}/ihc.png", "no known copyright restrictions"), (f"{SKI}/brick.png", "CC0"),
    (f"{SKI}/grass.png", "CC0"), (f"{SKI}/gravel.png", "CC0"), (f"{SKI}/camera.png", "CC0")]
HELDOUT = {"coffee", "LadyBird", "Storm"}
PACKAGES = ("mate-backgrounds", "python3-skimage")


def unpack(cache):
    """apt-get download + dpkg -x of PACKAGES into cache/x (idempotent)."""
    root = os.path.join(cache, "x")
    if all(os.path.exists(os.path.join(root, p)) for p, _ in SOURCES):
        return root
    os.makedirs(cache, exist_ok=True)
    subprocess.run(["apt-get", "download", "-q", *PACKAGES], cwd=cache, check=True)
    for deb in glob.glob(os.path.join(cache, "*.deb")):
        if any(os.path.basename(deb).startswith(p + "_") for p in PACKAGES):
            subprocess.run(["dpkg", "-x", deb, root], check=True)
    return root


def levels(img, is_jpeg, min_side):
    """Area-downscaled copies by 2^k, float [0, 1] (H, W, 3), while the short side stays >= min_side."""
    out = []
    k = 1 if is_jpeg else 0
    while min(img.size) // (2 ** k) >= min_side:
        w, h = img.size[0] // 2 ** k, img.size[1] // 2 ** k
        im = img if k == 0 else img.resize((w, h), Image.Resampling.BOX)
        out.append((k, np.asarray(im, np.float32) / 255.0))
        k += 1
    return out


def crops(arr, n, size, rng, min_std):
    h, w, _ = arr.shape
    got = []
    for _ in range(n * 3):                 # tries: flat crops are rejected
        if len(got) == n:
            break
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        c = arr[y:y + size, x:x + size]
        if c.std() >= min_std:
            got.append(np.round(c * 255.0).astype(np.uint8))
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="/work/cache/debs")
    ap.add_argument("--out", default="/work/cache/photo64.npz")
    ap.add_argument("--preview", default="/work/cache/photo64_preview.png")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--min-side", type=int, default=128)
    ap.add_argument("--density", type=float, default=1.0, help="crops per level = density * area / size^2")
    ap.add_argument("--min-std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    root = unpack(a.cache)
    rng = np.random.default_rng(a.seed)
    train, held, per_source = [], [], []
    for rel, lic in SOURCES:
        name = os.path.splitext(os.path.basename(rel))[0]
        img = Image.open(os.path.join(root, rel)).convert("RGB")
        n_img = 0
        for k, arr in levels(img, rel.endswith(".jpg"), a.min_side):
            n = max(1, int(round(a.density * arr.shape[0] * arr.shape[1] / a.size ** 2)))
            cs = crops(arr, n, a.size, rng, a.min_std)
            (held if name in HELDOUT else train).extend(cs)
            n_img += len(cs)
        per_source.append(dict(file=rel.split("/")[-1], package=PACKAGES[0] if rel.startswith(MATE) else PACKAGES[1],
                               licence=lic, size=list(img.size), crops=n_img, heldout=name in HELDOUT))
    train, held = np.stack(train), np.stack(held)
    meta = dict(source="Debian 12 mate-backgrounds 1.26.0 + python3-skimage 0.19.3 photographs",
                size=a.size, train=int(len(train)), heldout=int(len(held)), density=a.density,
                min_std=a.min_std, min_side=a.min_side, photos=per_source,
                layout="uint8 (N, H, W, 3) RGB; no augmentation stored (train.py --dihedral)")
    np.savez_compressed(a.out, train=train, heldout=held, meta=json.dumps(meta))
    pick = rng.choice(len(train), size=min(96, len(train)), replace=False)
    rgba = lambda x: np.concatenate([x, np.full(x.shape[:-1] + (1,), 255, np.uint8)], -1)
    preview_grid(rgba(np.concatenate([train[pick], held[:32]])), cols=16, scale=1, path=a.preview)
    print(json.dumps({k: v for k, v in meta.items() if k != "photos"}, indent=1))
    for s in per_source:
        print(f"  {s['file']:24s} {s['size'][0]}x{s['size'][1]:<5d} {s['crops']:5d} crops"
              f"{'  HELD OUT' if s['heldout'] else ''}  {s['licence']}")
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB) and {a.preview}")


if __name__ == "__main__":
    main()
