#!/usr/bin/env python3
"""pngcheck.py: checks on the PNGs that the headless GIMP tests write (Python standard library only, so it
runs with the python3 of a minimal Debian tree).

  pngcheck.py size F W H [C]               F is W x H with C channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA)
  pngcheck.py same A B                     A and B have identical pixels
  pngcheck.py differ A B                   some pixel of A differs from B
  pngcheck.py changed-only A B x y w h M   outside the rectangle grown by M pixels A == B; inside the
                                           rectangle at least a quarter of the pixels differ
  pngcheck.py alpha-same A B               the alpha channels of A and B are identical
  pngcheck.py noise CLEAN NOISY MODEL t x y w h
                                           inside the rectangle NOISY = sqrt(abar_t) CLEAN + sqrt(1 - abar_t) z
                                           with z ~ N(0, 1) (x in [-1, 1]): mean and variance of the implied z
                                           within bounds set by the sample count, per grey level of CLEAN;
                                           outside it NOISY == CLEAN. Only opaque pixels count.
Prints one line of numbers; exits 0 when the check holds, 1 when not, 2 on bad input.
"""
import json
import math
import os
import struct
import sys
import zlib

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def read_png(path):
    """Returns (width, height, channels, maxval, pixels) with pixels a flat list of ints, row-major,
    interleaved. 8- and 16-bit gray/gray+alpha/RGB/RGBA, not interlaced (what GIMP writes by default)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = hdr
    if ctype not in CHANNELS or depth not in (8, 16) or interlace:
        raise ValueError(f"{path}: colour type {ctype}, depth {depth}, interlace {interlace} not handled")
    c = CHANNELS[ctype]
    bpp = c * depth // 8
    stride = w * bpp
    raw = zlib.decompress(b"".join(idat))
    out = bytearray(h * stride)
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                line[i] = (line[i] + pr) & 255
        out[y * stride:(y + 1) * stride] = line
        prev = line
    if depth == 8:
        px = list(out)
    else:
        px = list(struct.unpack(f">{len(out) // 2}H", bytes(out)))
    return w, h, c, (1 << depth) - 1, px


def alpha_index(c):
    return c - 1 if c in (2, 4) else None


def schedule_abar(model, t):
    """abar_t of the model's scheduler_config.json (linear / scaled_linear / squaredcos_cap_v2)."""
    for sub in ("scheduler_config.json", os.path.join("scheduler", "scheduler_config.json")):
        p = os.path.join(model, sub)
        if os.path.exists(p):
            cfg = json.load(open(p))
            break
    else:
        cfg = {}
    n = cfg.get("num_train_timesteps", 1000)
    b0, b1 = cfg.get("beta_start", 0.0001), cfg.get("beta_end", 0.02)
    kind = cfg.get("beta_schedule", "linear")
    if kind == "linear":
        betas = [b0 + (b1 - b0) * i / (n - 1) for i in range(n)]
    elif kind == "scaled_linear":
        betas = [(math.sqrt(b0) + (math.sqrt(b1) - math.sqrt(b0)) * i / (n - 1)) ** 2 for i in range(n)]
    elif kind == "squaredcos_cap_v2":
        f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)]
    else:
        raise ValueError(f"beta_schedule {kind} not handled")
    abar = 1.0
    for i in range(t + 1):
        abar *= 1.0 - betas[i]
    return abar


def load_pair(a, b):
    A, B = read_png(a), read_png(b)
    if A[:3] != B[:3]:
        raise ValueError(f"{a} is {A[0]}x{A[1]}x{A[2]} but {b} is {B[0]}x{B[1]}x{B[2]}")
    return A, B


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "size":
        w, h, c, _, _ = read_png(args[0])
        want = [int(v) for v in args[1:]]
        got = [w, h, c][:len(want)]
        print(f"size {w}x{h}x{c}")
        return got == want
    if cmd in ("same", "differ"):
        A, B = load_pair(args[0], args[1])
        n = sum(1 for p, q in zip(A[4], B[4]) if p != q)
        print(f"{n} of {len(A[4])} values differ")
        return (n == 0) == (cmd == "same")
    if cmd == "alpha-same":
        A, B = load_pair(args[0], args[1])
        ai = alpha_index(A[2])
        if ai is None:
            print("no alpha channel")
            return False
        n = sum(1 for i in range(ai, len(A[4]), A[2]) if A[4][i] != B[4][i])
        print(f"{n} alpha values differ")
        return n == 0
    if cmd == "changed-only":
        A, B = load_pair(args[0], args[1])
        x, y, w, h, m = (int(v) for v in args[2:7])
        W, H, C = A[0], A[1], A[2]
        outside_diff = inside_diff = inside = 0
        for py in range(H):
            for px in range(W):
                i = (py * W + px) * C
                d = A[4][i:i + C] != B[4][i:i + C]
                if x <= px < x + w and y <= py < y + h:
                    inside += 1
                    inside_diff += d
                elif not (x - m <= px < x + w + m and y - m <= py < y + h + m):
                    outside_diff += d
        print(f"outside: {outside_diff} pixels changed; inside: {inside_diff} of {inside} changed")
        return outside_diff == 0 and inside_diff * 4 >= inside
    if cmd == "noise":
        A, B = load_pair(args[0], args[1])
        abar = schedule_abar(args[2], int(args[3]))
        x, y, w, h = (int(v) for v in args[4:8])
        W, H, C, maxv = A[0], A[1], A[2], A[3]
        ai = alpha_index(C)
        colour = [k for k in range(C) if k != ai]
        s, s1 = math.sqrt(abar), math.sqrt(1.0 - abar)
        by_level, outside_diff = {}, 0
        for py in range(H):
            for px in range(W):
                i = (py * W + px) * C
                inside = x <= px < x + w and y <= py < y + h
                if not inside:
                    outside_diff += A[4][i:i + C] != B[4][i:i + C]
                    continue
                if ai is not None and A[4][i + ai] != maxv:
                    continue
                for k in colour:
                    c0 = 2.0 * A[4][i + k] / maxv - 1.0
                    c1 = 2.0 * B[4][i + k] / maxv - 1.0
                    by_level.setdefault(A[4][i + k], []).append((c1 - s * c0) / s1)
        ok = outside_diff == 0 and by_level
        parts = [f"abar_t {abar:.6f} sigma_px {127.5 * s1:.2f}", f"outside changed {outside_diff}"]
        for level, z in sorted(by_level.items()):
            n = len(z)
            mean = sum(z) / n
            var = sum((v - mean) ** 2 for v in z) / (n - 1)
            # 8-bit rounding adds (1/12) / (maxv/2 * s1)^2 to the variance of z; bounds: 6 standard errors.
            qvar = (1.0 / 12.0) / ((maxv / 2.0 * s1) ** 2)
            mean_tol = 6.0 * math.sqrt((1.0 + qvar) / n)
            var_tol = 6.0 * math.sqrt(2.0 / n) + 0.01
            good = abs(mean) <= mean_tol and abs(var - 1.0 - qvar) <= var_tol
            ok = ok and good
            parts.append(f"level {level}: n {n} mean {mean:+.4f} (tol {mean_tol:.4f}) var {var:.4f} "
                         f"(want {1 + qvar:.4f} +- {var_tol:.4f}){'' if good else ' BAD'}")
        print("; ".join(parts))
        return bool(ok)
    raise ValueError(f"unknown check {cmd}")


if __name__ == "__main__":
    try:
        sys.exit(0 if main(sys.argv) else 1)
    except (ValueError, IndexError, OSError) as e:
        print(f"pngcheck: {e}")
        sys.exit(2)
