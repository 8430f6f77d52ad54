#!/usr/bin/env python3
"""eval_emoji.py: evaluates an emoji-32 model folder (train.py output).

1. Held-out eps-MSE at t = 50, 250, 500, 750: every held-out image of the .npz, noised with fixed-seed
   noise, through the UNet (diffusers, fp32, CPU); mean of (eps_theta - eps)^2 per element.
2. With --samples S.npy (B, 4, 32, 32) float32 in model range, as the C engine writes them
   (`ddpm sample --model weights/emoji-32 --batch 64 --out S.npy`):
   - a grid PNG of up to 64 samples composited on a checkerboard (transparency shows as the checks),
     --grid (default: S_grid.png beside S.npy);
   - for the first 16 samples, the RMS distance (premultiplied colour + alpha, [0, 1] units) to the
     nearest TRAINING image, next to the same statistic for held-out images (real emoji the model never
     saw): samples much closer to the training set than held-out images are would mean memorisation;
     a PNG of sample | nearest training image pairs, --nn-grid (default: S_nn.png).
3. --diffusers-samples N: makes N samples with diffusers itself (DDIM, --steps) into --samples, for a quick
   look before the C engine can sample. The final grid must come from our engine.

Pixel layout (train.py): RGBA, premultiplied colour, [-1, 1]. To straight RGBA: a = (x3 + 1) / 2,
c = clamp((x_rgb + 1) / 2, 0, a), rgb = c / a.

Usage:
  python3 tools/train/eval_emoji.py --model weights/emoji-32 [--samples s.npy] [--diffusers-samples 64]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_emoji_dataset import preview_grid  # noqa: E402
from train import heldout_eps_mse, to_model_space  # noqa: E402


def model_to_straight_u8(x):
    """float (B, 4, H, W) premultiplied [-1, 1] -> uint8 (B, H, W, 4) straight RGBA."""
    x = np.asarray(x, np.float64).transpose(0, 2, 3, 1)
    p = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    a = p[..., 3:4]
    c = np.minimum(p[..., :3], a)
    rgb = np.where(a > 0, c / np.maximum(a, 1e-12), 0.0)
    return np.round(np.concatenate([rgb, a], -1) * 255.0).astype(np.uint8)


def premult_features(u8):
    """uint8 (N, H, W, 4) straight -> float32 (N, H*W*4) premultiplied [0, 1]."""
    x = u8.astype(np.float32) / 255.0
    x[..., :3] *= x[..., 3:4]
    return x.reshape(len(x), -1)


def nearest(query, base):
    """RMS distance and index of the nearest row of base for each row of query."""
    qq = (query * query).sum(1)[:, None]
    bb = (base * base).sum(1)[None, :]
    d2 = np.maximum(qq + bb - 2.0 * query @ base.T, 0.0) / query.shape[1]
    i = d2.argmin(1)
    return np.sqrt(d2[np.arange(len(query)), i]), i


@torch.no_grad()
def diffusers_samples(model_dir, n, steps, seed):
    from diffusers import DDIMScheduler, UNet2DModel
    unet = UNet2DModel.from_pretrained(model_dir, torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
    sched = DDIMScheduler.from_pretrained(model_dir)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size), generator=g)
    for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return x.numpy().astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="/work/cache/emoji32.npz")
    ap.add_argument("--samples", default=None, help=".npy (B, 4, 32, 32) float32, model range")
    ap.add_argument("--grid", default=None)
    ap.add_argument("--nn-grid", default=None)
    ap.add_argument("--diffusers-samples", type=int, default=0, help="make this many samples with diffusers")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for --diffusers-samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-mse", action="store_true", help="skip the held-out eps-MSE")
    ap.add_argument("--json", default=None, help="write the numbers here too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = np.load(a.data)
    result = {"model": a.model}

    if not a.no_mse:
        from diffusers import DDPMScheduler, UNet2DModel
        unet = UNet2DModel.from_pretrained(a.model, torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
        sched = DDPMScheduler.from_pretrained(a.model)
        abar = sched.alphas_cumprod.float()
        r = heldout_eps_mse(unet, to_model_space(data["heldout"]), abar, torch.device("cpu"),
                            prediction=sched.config.prediction_type)
        result["heldout_eps_mse"] = {str(t): v for t, v in r.items()}
        result["heldout_eps_mse_mean"] = sum(r.values()) / len(r)
        print(f"held-out eps-MSE ({len(data['heldout'])} images, fp32): "
              + "  ".join(f"t={t}: {v:.4f}" for t, v in r.items()) + f"  mean {result['heldout_eps_mse_mean']:.4f}")

    if a.diffusers_samples > 0:
        if not a.samples:
            raise SystemExit("eval_emoji.py: --diffusers-samples needs --samples OUT.npy")
        s = diffusers_samples(a.model, a.diffusers_samples, a.steps, a.seed)
        np.save(a.samples, s)
        print(f"wrote {a.samples}: {s.shape} diffusers DDIM-{a.steps} samples (quick look, not the engine)")

    if a.samples:
        s = np.load(a.samples)
        if s.ndim != 4 or s.shape[1] != 4:
            raise SystemExit(f"eval_emoji.py: {a.samples}: expected (B, 4, H, W), got {s.shape}")
        stem = os.path.splitext(a.samples)[0]
        u8 = model_to_straight_u8(s)
        grid = a.grid or stem + "_grid.png"
        preview_grid(u8[:64], cols=8, scale=4, path=grid)
        print(f"wrote {grid} ({min(64, len(u8))} samples, 4x, on a checkerboard)")

        train_f = premult_features(data["train"])
        d_s, i_s = nearest(premult_features(u8[:16]), train_f)
        d_h, _ = nearest(premult_features(data["heldout"]), train_f)
        result["sample_nn_rms"] = d_s.tolist()
        result["sample_nn_rms_median"] = float(np.median(d_s))
        result["heldout_nn_rms_median"] = float(np.median(d_h))
        result["heldout_nn_rms_p10"] = float(np.percentile(d_h, 10))
        print(f"nearest-training RMS of {len(d_s)} samples: median {np.median(d_s):.4f}, min {d_s.min():.4f} "
              f"(held-out real emoji: median {np.median(d_h):.4f}, 10th pct {np.percentile(d_h, 10):.4f}); "
              "far below the held-out numbers = copies of training images")
        pairs = np.stack([u8[:16], data["train"][i_s]], 1).reshape(-1, *u8.shape[1:])
        nn_grid = a.nn_grid or stem + "_nn.png"
        preview_grid(pairs, cols=8, scale=4, path=nn_grid)
        print(f"wrote {nn_grid} (pairs: sample, nearest training image)")

    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
