#!/usr/bin/env python3
"""build_emoji_dataset.py: Noto Color Emoji bitmaps -> 32x32 RGBA training set (.npz) + preview grid.

Source: Debian's fonts-noto-color-emoji (NotoColorEmoji.ttf, SIL Open Font License 1.1). The font keeps
one colour bitmap strike (109 ppem, 136x128 PNGs) in its CBDT table; we read those PNGs directly with
fontTools, no rasteriser involved.

Pipeline, per glyph bitmap:
  1. decode the PNG (palette or RGBA) to RGBA uint8, 136 wide x 128 high;
  2. exact duplicates (identical PNG bytes) are dropped;
  3. pad to a 136x136 square with transparent rows (centred), then area-resize to 32x32 in
     PREMULTIPLIED float (colour * alpha), so transparent pixels contribute no colour and edges get no
     dark fringe; un-premultiply at the end (fully transparent pixels get colour 0);
  4. near duplicates are dropped, in two passes: (a) key = the 16x16 area-downscale of the 32x32
     premultiplied image quantised to 32 levels per channel (hash); (b) greedily, any image whose RMS
     distance (premultiplied, [0, 1] units) to an already kept image is below --near-rms (0.015, about
     4/255): at 32x32 the skin-tone variants of emoji with tiny figures (a person in a bed, a jockey) are
     otherwise indistinguishable copies;
  5. held-out split by GROUP, not by image: a group is all images with the same 16x16 alpha silhouette
     (skin-tone variants of one emoji share a silhouette), so no held-out image has a recolour twin in
     the training set. About --holdout of the groups, chosen with a fixed seed, are held out.

Output (.npz, uint8): train (N, 32, 32, 4), heldout (M, 32, 32, 4), straight (non-premultiplied) RGBA,
plus train_names / heldout_names (glyph names) and a JSON 'meta' string with the counts.

Usage: python3 tools/train/build_emoji_dataset.py --out /work/cache/emoji32.npz --preview /work/cache/emoji32_preview.png
"""
import argparse
import hashlib
import io
import json
import sys

import numpy as np
from PIL import Image

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"


def area_matrix(n_in, n_out):
    """(n_out, n_in) matrix whose row i averages the input interval [i*s, (i+1)*s), s = n_in/n_out, with
    fractional weights at the ends: exact box (area) resampling for any ratio."""
    s = n_in / n_out
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
            m[i, j] = min(b, j + 1) - max(a, j)
    return m / s


def premultiply(rgba_u8):
    """uint8 (H, W, 4) straight -> float64 (H, W, 4) premultiplied in [0, 1]."""
    x = rgba_u8.astype(np.float64) / 255.0
    x[..., :3] *= x[..., 3:4]
    return x


def unpremultiply_u8(p):
    """float (H, W, 4) premultiplied [0, 1] -> uint8 straight RGBA; colour 0 where alpha is 0."""
    a = p[..., 3:4]
    rgb = np.where(a > 0, p[..., :3] / np.maximum(a, 1e-12), 0.0)
    out = np.concatenate([np.clip(rgb, 0, 1), np.clip(a, 0, 1)], axis=-1)
    return np.round(out * 255.0).astype(np.uint8)


def resize_premultiplied(p, size):
    """Area resize of a premultiplied (H, W, 4) float image to (size, size, 4)."""
    h, w, _ = p.shape
    mh, mw = area_matrix(h, size), area_matrix(w, size)
    rows = np.tensordot(mh, p, axes=(1, 0))                    # (size, W, 4)
    return np.tensordot(mw, rows, axes=(1, 1)).transpose(1, 0, 2)


def pad_square(rgba):
    """(H, W, 4) -> (S, S, 4), S = max(H, W), centred on transparent black."""
    h, w, _ = rgba.shape
    s = max(h, w)
    out = np.zeros((s, s, 4), rgba.dtype)
    y0, x0 = (s - h) // 2, (s - w) // 2
    out[y0:y0 + h, x0:x0 + w] = rgba
    return out


def near_duplicate_filter(images, thr):
    """Greedy: keep image i unless an earlier kept image is within RMS distance thr (premultiplied
    [0, 1] units). images: uint8 (N, S, S, 4) straight. Returns a bool keep mask (N,)."""
    x = images.astype(np.float32) / 255.0
    x[..., :3] *= x[..., 3:4]
    f = x.reshape(len(x), -1)
    sq = (f * f).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)) / f.shape[1]   # (N, N) mean squared difference
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        if keep[i]:
            dup = d2[i] < thr * thr
            dup[: i + 1] = False
            keep[dup] = False
    return keep


def read_bitmaps(font_path):
    """Yields (glyph name, PNG bytes) for every bitmap of every CBDT strike."""
    from fontTools.ttLib import TTFont
    font = TTFont(font_path, lazy=True)
    for strike in font["CBDT"].strikeData:
        for name, glyph in strike.items():
            glyph.ensureDecompiled() if hasattr(glyph, "ensureDecompiled") else glyph.decompile()
            data = getattr(glyph, "imageData", None)
            if data and data[:8] == b"\x89PNG\r\n\x1a\n":
                yield name, bytes(data)


def preview_grid(images, cols, scale, path):
    """Composites straight RGBA uint8 (N, S, S, 4) on a grey checkerboard, nearest-upscaled by `scale`."""
    n, s = images.shape[0], images.shape[1]
    rows = (n + cols - 1) // cols
    cs = s * scale
    yy, xx = np.mgrid[0:rows * cs, 0:cols * cs]
    board = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 200, 255).astype(np.float64)[..., None].repeat(3, -1)
    for k in range(n):
        r, c = divmod(k, cols)
        im = images[k].astype(np.float64).repeat(scale, 0).repeat(scale, 1) / 255.0
        a = im[..., 3:4]
        tile = board[r * cs:(r + 1) * cs, c * cs:(c + 1) * cs]
        board[r * cs:(r + 1) * cs, c * cs:(c + 1) * cs] = im[..., :3] * 255.0 * a + tile * (1 - a)
    Image.fromarray(np.round(board).astype(np.uint8), "RGB").save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--font", default=FONT)
    ap.add_argument("--out", default="/work/cache/emoji32.npz")
    ap.add_argument("--preview", default="/work/cache/emoji32_preview.png")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--holdout", type=float, default=0.05, help="fraction of silhouette groups held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--near-rms", type=float, default=0.015, help="near-duplicate RMS threshold, [0,1] units")
    args = ap.parse_args(argv)

    n_bitmaps = 0
    seen_png = set()
    seen_near = set()
    names, images, groups = [], [], []
    n_exact = n_near = 0
    for name, png in read_bitmaps(args.font):
        n_bitmaps += 1
        h = hashlib.sha1(png).digest()
        if h in seen_png:
            n_exact += 1
            continue
        seen_png.add(h)
        rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        small = resize_premultiplied(premultiply(pad_square(rgba)), args.size)       # (S, S, 4) in [0, 1]
        tiny = resize_premultiplied(small, 16)
        near_key = hashlib.sha1(np.round(tiny * 31).astype(np.uint8).tobytes()).digest()
        if near_key in seen_near:
            n_near += 1
            continue
        seen_near.add(near_key)
        groups.append(hashlib.sha1(np.round(tiny[..., 3] * 15).astype(np.uint8).tobytes()).hexdigest())
        names.append(name)
        images.append(unpremultiply_u8(small))

    images = np.stack(images)                        # (N, S, S, 4) uint8 straight RGBA
    keep = near_duplicate_filter(images, args.near_rms)
    n_near_rms = int((~keep).sum())
    images = images[keep]
    names = [n for n, k in zip(names, keep) if k]
    groups = [g for g, k in zip(groups, keep) if k]
    uniq = sorted(set(groups))
    rng = np.random.default_rng(args.seed)
    n_hold_groups = max(1, int(round(args.holdout * len(uniq))))
    held_groups = set(rng.choice(uniq, size=n_hold_groups, replace=False).tolist())
    held = np.array([g in held_groups for g in groups])
    train, heldout = images[~held], images[held]
    meta = {
        "source": "Debian fonts-noto-color-emoji, NotoColorEmoji.ttf (SIL OFL 1.1), CBDT PNG strike",
        "glyph_bitmaps": n_bitmaps, "exact_duplicates": n_exact, "near_duplicates_hash": n_near,
        "near_duplicates_rms": n_near_rms, "near_rms_threshold": args.near_rms,
        "after_dedup": int(images.shape[0]), "silhouette_groups": len(uniq), "heldout_groups": n_hold_groups,
        "train": int(train.shape[0]), "heldout": int(heldout.shape[0]), "size": args.size,
        "layout": "uint8 (N, H, W, 4) straight RGBA; train on premultiplied colour",
    }
    np.savez_compressed(args.out, train=train, heldout=heldout,
                        train_names=np.array(names)[~held], heldout_names=np.array(names)[held],
                        meta=json.dumps(meta))
    pick = np.random.default_rng(1).choice(train.shape[0], size=min(128, train.shape[0]), replace=False)
    preview_grid(np.concatenate([train[pick], heldout[:32]]), cols=16, scale=2, path=args.preview)
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out} and {args.preview} (last 2 rows of the preview: held-out images)", file=sys.stderr)


if __name__ == "__main__":
    main()
