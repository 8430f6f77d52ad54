#!/usr/bin/env python3
"""eval_photo.py: "Denoise selection, already noisy" with the photo-64 prior vs GEGL's denoisers.

For each photo: the centre 256x256 RGB crop (8-bit), plus Gaussian noise of sigma S in 8-bit units
(fixed seed, rounded, clipped to 0..255), saved as noisy.png; then
  - ours:            ddpm denoise --model MODEL --noisy-sigma S --sampler SAMPLER --steps N --ensemble K noisy.png
  - ours via GIMP:   (--via-gimp) the plug-in's Denoise Selection, already-noisy, sigma S, in gimp-console-3.0
                     (tests/gimp/run.sh --denoise-dir: the same model, sampler, steps and ensemble)
  - denoise-dct:     gegl noisy.png -o out.png -- gegl:denoise-dct sigma=S
  - noise-reduction: gegl noisy.png -o out.png -- gegl:noise-reduction iterations=K, best K of --nr-iters
PSNR (dB, 8-bit, all three channels) against the clean crop is printed as a Markdown table.

Photos: python3-skimage's astronaut, chelsea, coffee, rocket (Debian 12, /usr/lib/python3/dist-packages/
skimage/data) and mate-backgrounds' LadyBird and Storm. build_photo_dataset.py holds out coffee, LadyBird
and Storm (no crop of them is in the training set); astronaut, chelsea and rocket ARE in the training set.

Usage:
  python3 tools/train/eval_photo.py --model weights/photo-64 --ddpm build/cli/ddpm [--work /tmp/ep]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

SKI = "/usr/lib/python3/dist-packages/skimage/data"
MATE = "/usr/share/backgrounds/mate/nature"
PHOTOS = [("coffee", f"{SKI}/coffee.png", True), ("LadyBird", f"{MATE}/LadyBird.jpg", True),
          ("Storm", f"{MATE}/Storm.jpg", True), ("astronaut", f"{SKI}/astronaut.png", False),
          ("chelsea", f"{SKI}/chelsea.png", False), ("rocket", f"{SKI}/rocket.jpg", False)]


def find(path, roots):
    """The photo at path, or under one of roots (an unpacked .deb tree), or None."""
    for r in [""] + roots:
        p = os.path.join(r, path.lstrip("/")) if r else path
        if os.path.exists(p):
            return p
    return None


def centre_crop(path, size):
    """uint8 (size, size, 3): the centre crop of the photo (no resizing)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size].copy()


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def load(p):
    return np.asarray(Image.open(p).convert("RGB"))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"eval_photo: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="weights/photo-64")
    ap.add_argument("--ddpm", default="build/cli/ddpm", help="the engine's CLI")
    ap.add_argument("--gegl", default="gegl")
    ap.add_argument("--work", default="/tmp/eval_photo")
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--photos", default="coffee,LadyBird,Storm,astronaut,chelsea,rocket")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim"),
                    help="ddim (eta 0, deterministic: the plug-in's default for already-noisy pixels) or ddpm")
    ap.add_argument("--steps", type=int, default=1000, help="inference steps over 1000 (1000: every t)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ensemble", type=int, default=1, help="flips/transposes averaged (ddpm denoise --ensemble)")
    ap.add_argument("--via-gimp", action="store_true",
                    help="also run the GIMP plug-in on every noisy picture and report its PSNR")
    ap.add_argument("--nr-iters", default="4,8,16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--roots", default="/work/cache/debs/x", help="unpacked .deb trees to look in, comma-separated")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    roots = [r for r in a.roots.split(",") if r]
    sigmas = [int(s) for s in a.sigmas.split(",")]
    iters = [int(k) for k in a.nr_iters.split(",")]
    want = a.photos.split(",")
    rows = []
    for name, path, held in PHOTOS:
        if name not in want:
            continue
        p = find(path, roots)
        if p is None:
            print(f"eval_photo: {path} not found, skipped", file=sys.stderr)
            continue
        clean = centre_crop(p, a.size)
        Image.fromarray(clean).save(f"{a.work}/{name}_clean.png")
        for si, s in enumerate(sigmas):
            rng = np.random.default_rng(a.seed * 1000 + si)
            noisy = np.clip(np.rint(clean + rng.normal(0, s, clean.shape)), 0, 255).astype(np.uint8)
            base = f"{a.work}/{name}_s{s}"
            Image.fromarray(noisy).save(f"{base}_noisy.png")
            t0 = time.time()
            run([a.ddpm, "denoise", "-q", "--model", a.model, "--noisy-sigma", str(s), "--sampler", a.sampler,
                 "--steps", str(a.steps), "--threads", str(a.threads), "--seed", str(a.seed),
                 "--ensemble", str(a.ensemble),
                 f"{base}_noisy.png", "--out", f"{base}_ours.png"])
            t_ours = time.time() - t0
            run([a.gegl, f"{base}_noisy.png", "-o", f"{base}_dct.png", "--", "gegl:denoise-dct", f"sigma={s}"])
            nr = {}
            for k in iters:
                run([a.gegl, f"{base}_noisy.png", "-o", f"{base}_nr{k}.png", "--", "gegl:noise-reduction",
                     f"iterations={k}"])
                nr[k] = psnr(load(f"{base}_nr{k}.png"), clean)
            kbest = max(nr, key=nr.get)
            row = dict(photo=name, held=held, sigma=s, noisy=psnr(noisy, clean),
                       ours=psnr(load(f"{base}_ours.png"), clean), dct=psnr(load(f"{base}_dct.png"), clean),
                       nr=nr[kbest], nr_k=kbest, t_ours=t_ours)
            rows.append(row)
            print(f"{name} sigma {s}: noisy {row['noisy']:.2f} ours {row['ours']:.2f} ({t_ours:.0f} s) "
                  f"dct {row['dct']:.2f} nr(k={kbest}) {row['nr']:.2f}", file=sys.stderr, flush=True)
    if a.via_gimp:
        env = dict(os.environ, DENOISE_STEPS=str(a.steps), DENOISE_ENSEMBLE=str(a.ensemble),
                   DENOISE_SAMPLER=a.sampler, DENOISE_MODEL=os.path.basename(os.path.normpath(a.model)))
        t0 = time.time()
        r = subprocess.run(["tests/gimp/run.sh", "--denoise-dir", a.work], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"eval_photo: tests/gimp/run.sh --denoise-dir failed ({r.returncode}): {r.stderr[-800:]}")
        print(f"GIMP plug-in: {len(rows)} pictures in {time.time() - t0:.0f} s", file=sys.stderr)
        for row in rows:
            clean = load(f"{a.work}/{row['photo']}_clean.png")
            row["gimp"] = psnr(load(f"{a.work}/{row['photo']}_s{row['sigma']}_gimp.png"), clean)
    cols = ["noisy", "ours"] + (["gimp"] if a.via_gimp else []) + ["dct", "nr"]
    heads = {"noisy": "noisy input", "ours": f"ours ({os.path.basename(os.path.normpath(a.model))}, CLI)",
             "gimp": "ours (GIMP plug-in)", "dct": "gegl:denoise-dct", "nr": "gegl:noise-reduction (best K)"}
    print(f"\nPSNR (dB) vs the clean {a.size}x{a.size} centre crop; ours = ddpm denoise --noisy-sigma S "
          f"--sampler {a.sampler} --steps {a.steps} --ensemble {a.ensemble}\n")
    print("| photo | in training? | sigma | " + " | ".join(heads[c] for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.2f}" + (f" (K={r['nr_k']})" if c == "nr" else "") for c in cols]
        print(f"| {r['photo']} | {'no (held out)' if r['held'] else 'yes'} | {r['sigma']} | " + " | ".join(cells) + " |")
    for held in (True, False):
        sel = [r for r in rows if r["held"] == held]
        for s in sigmas:
            ss = [r for r in sel if r["sigma"] == s]
            if ss:
                m = {k: np.mean([r[k] for r in ss]) for k in cols}
                print(f"| mean, {'held out' if held else 'in training'} ({len(ss)}) | | {s} | "
                      + " | ".join(f"{m[c]:.2f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
