#!/usr/bin/env python3
"""bench_cpu_ops_torch.py: PyTorch's CPU convolution (torch.nn.functional.conv2d, oneDNN) at every conv shape
of a google/ddpm-* UNet forward, timed like tools/bench_cpu_ops.c (best of single calls), and, given that
bench, both side by side with the ratio torch_ms / ours_ms (> 1: we are faster).

    python3 tools/bench_cpu_ops_torch.py --config cifar10-32 --threads 2 --batch 1 --ours build/tools/bench_cpu_ops

The shapes (with how often one forward runs each) are derived from the config by walking the UNet2DModel
like diffusers does. Ours and torch run alternately, shape by shape, so load from other processes hits
both alike. On a busy machine, --threads 1 --cpu-time compares CPU time instead of wall time.
"""
import argparse
import collections
import os
import subprocess
import time

CONFIGS = {  # block_out_channels, sample_size; both use layers_per_block 2 (unet2d-spec.md)
    "cifar10-32": ((128, 256, 256, 256), 32),
    "celebahq-256": ((128, 128, 256, 256, 512, 512), 256),
}


def conv_shapes(boc, size, layers=2, in_ch=3, out_ch=3):
    """Counter of (cin, cout, h, k, stride) over one forward; h is the conv's input size."""
    shapes = collections.Counter()
    h, ch = size, boc[0]
    shapes[(in_ch, ch, h, 3, 1)] += 1                      # conv_in
    skips = [ch]
    for i, out in enumerate(boc):                          # down blocks
        for _ in range(layers):
            shapes[(ch, out, h, 3, 1)] += 1
            shapes[(out, out, h, 3, 1)] += 1
            if ch != out:
                shapes[(ch, out, h, 1, 1)] += 1
            ch = out
            skips.append(ch)
        if i < len(boc) - 1:                               # downsampler: stride 2, pad {0,0,1,1}
            shapes[(ch, ch, h, 3, 2)] += 1
            h //= 2
            skips.append(ch)
    shapes[(ch, ch, h, 3, 1)] += 4                         # mid: two resnets
    for i, out in enumerate(reversed(boc)):                # up blocks
        for _ in range(layers + 1):
            cin = ch + skips.pop()
            shapes[(cin, out, h, 3, 1)] += 1
            shapes[(out, out, h, 3, 1)] += 1
            shapes[(cin, out, h, 1, 1)] += 1
            ch = out
        if i < len(boc) - 1:                               # upsampler: nearest x2, then conv
            h *= 2
            shapes[(ch, ch, h, 3, 1)] += 1
    shapes[(ch, out_ch, h, 3, 1)] += 1                     # conv_out
    return shapes


def label(cin, cout, h, k, stride):
    return f"conv{k}x{k} {cin}->{cout} {h}x{h}" + (" s2" if stride == 2 else "")


def torch_ms(torch, F, shape, batch, reps, clock=time.perf_counter):
    cin, cout, h, k, stride = shape
    x = torch.randn(batch, cin, h, h)
    w = torch.randn(cout, cin, k, k) * 0.05
    b = torch.randn(cout)
    if stride == 2:  # downsample_padding 0: pad one column right, one row bottom, then no padding
        run = lambda: F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2)
    else:
        run = lambda: F.conv2d(x, w, b, padding=k // 2)
    with torch.inference_mode():
        run()
        best = float("inf")
        for _ in range(reps):
            t = clock()
            run()
            best = min(best, clock() - t)
    return best * 1e3


def ours_ms(binary, shape, batch, reps, threads, cpu_time=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    cmd = [binary, "--batch", str(batch), "--reps", str(reps), "--shape", ",".join(map(str, shape))]
    out = subprocess.run(cmd + (["--cpu-time"] if cpu_time else []),
                         capture_output=True, text=True, env=env, check=True).stdout
    text = label(*shape)
    for line in out.splitlines():
        if line.startswith(text + " "):
            return float(line[len(text):].split()[0])
    raise RuntimeError(f"no line for {text!r} in:\n{out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cifar10-32", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1, help="alternate torch/ours this many times per shape, keep the best")
    ap.add_argument("--ours", help="path of bench_cpu_ops (omit to time torch only)")
    ap.add_argument("--cpu-time", action="store_true", help="CPU time of the calling thread (needs --threads 1)")
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time needs --threads 1")
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    shapes = conv_shapes(*CONFIGS[args.config])
    total = sum(2.0 * co * ci * k * k * (h // s) ** 2 * n for (ci, co, h, k, s), n in shapes.items())
    print(f"# {args.config}: {total * 1e-9:.2f} GFLOP of convolutions per image; torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}, best of {args.reps} x {args.rounds} rounds"
          + (" (CPU time)" if args.cpu_time else ""))
    print(f"{'shape':30s} {'torch ms':>9s} {'GFLOP/s':>8s} {'ours ms':>9s} {'GFLOP/s':>8s} {'ratio':>6s} {'count':>5s}")
    tot_t = tot_o = 0.0
    for shape, count in sorted(shapes.items(), key=lambda kv: (-kv[0][2], kv[0][3], kv[0][4], kv[0][:2])):
        cin, cout, h, k, stride = shape
        flop = 2.0 * cout * cin * k * k * (h // stride) ** 2 * args.batch
        t = o = float("inf")
        for _ in range(args.rounds):
            t = min(t, torch_ms(torch, F, shape, args.batch, args.reps,
                                time.thread_time if args.cpu_time else time.perf_counter))
            if args.ours:
                o = min(o, ours_ms(args.ours, shape, args.batch, args.reps, args.threads, args.cpu_time))
        tot_t += t * count
        line = f"{label(*shape):30s} {t:9.3f} {flop / t * 1e-6:8.1f}"
        if args.ours:
            tot_o += o * count
            line += f" {o:9.3f} {flop / o * 1e-6:8.1f} {t / o:6.2f}"
        print(line + f" {count:5d}", flush=True)
    line = f"{'one forward (sum ms x count)':30s} {tot_t:9.3f} {total * args.batch / tot_t * 1e-6:8.1f}"
    if args.ours:
        line += f" {tot_o:9.3f} {total * args.batch / tot_o * 1e-6:8.1f} {tot_t / tot_o:6.2f}"
    print(line)


if __name__ == "__main__":
    main()
