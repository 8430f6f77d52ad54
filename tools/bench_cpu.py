#!/usr/bin/env python3
"""bench_cpu.py: our CPU UNet forward against diffusers' UNet2DModel, same config, batch and threads.

Runs `ddpm bench --config NAME --batch B --device cpu --threads T` (random weights) and times the same
architecture in PyTorch (diffusers UNet2DModel, fp32, torch.set_num_threads(T), inference_mode), in one
run on the same machine, and prints the median milliseconds per forward and the ratio torch / ours
(> 1 means we are faster).

    python3 tools/bench_cpu.py --ddpm build/cli/ddpm --config cifar10-32 --batch 1 8 --threads 2
"""
import argparse
import re
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # The google/ddpm-* architectures (unet2d-spec.md).
    "cifar10-32": dict(sample_size=32, block_out_channels=(128, 256, 256, 256),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    "celebahq-256": dict(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                         down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4),
}
COMMON = dict(in_channels=3, out_channels=3, layers_per_block=2, attention_head_dim=None, norm_num_groups=32,
              norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, act_fn="silu")


def torch_forward_ms(name, batch, threads, iters, warmup):
    import torch
    from diffusers import UNet2DModel
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet2DModel(**CONFIGS[name], **COMMON).eval()
    size = CONFIGS[name]["sample_size"]
    x = torch.randn(batch, 3, size, size)
    t = torch.full((batch,), 500, dtype=torch.long)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            start = time.perf_counter()
            model(x, t)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), torch.__version__


def ddpm_forward_ms(ddpm, name, batch, threads, iters, warmup):
    cmd = [ddpm, "bench", "--config", name, "--batch", str(batch), "--device", "cpu", "--precision", "fp32",
           "--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"median_ms=([0-9.]+)", out)
    if not m:
        sys.exit(f"bench_cpu: no median_ms in the output of {' '.join(cmd)}:\n{out}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddpm", default="build/cli/ddpm")
    ap.add_argument("--config", default="cifar10-32", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    print(f"{'config':<14}{'batch':>6}{'threads':>8}{'ours ms':>11}{'torch ms':>11}{'torch/ours':>12}")
    for batch in args.batch:
        ours = ddpm_forward_ms(args.ddpm, args.config, batch, args.threads, args.iters, args.warmup)
        theirs, version = torch_forward_ms(args.config, batch, args.threads, args.iters, args.warmup)
        print(f"{args.config:<14}{batch:>6}{args.threads:>8}{ours:>11.1f}{theirs:>11.1f}{theirs / ours:>11.2f}x"
              f"   (torch {version})", flush=True)


if __name__ == "__main__":
    main()
