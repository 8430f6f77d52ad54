#!/usr/bin/env python3
"""bench_gpu.py: this project's CUDA backend against diffusers/PyTorch, in one run on the same GPU.

1. UNet forwards: `ddpm bench` (the CLI: ddpm_context_eps, so host<->device copies of x and eps included)
   for google/ddpm-cifar10-32 at batch 1 and 128 and google/ddpm-celebahq-256 at batch 1 and 4, random
   weights, fp16 (each conv path in --conv: the NCHW implicit-GEMM kernel "implicit", the channels-last one
   "nhwc", the default "auto", the 128x128 mma.sync tile where it fills a wave "mma", im2col + cuBLAS "gemm",
   and "tuned": the defaults with `ddpm --tune`, whose report is printed under its line);
   diffusers UNet2DModel with random weights in fp16, eager and replayed as a CUDA graph (torch.cuda.graphs),
   device tensors only.
2. Whole samples, 32x32 batch 1: `ddpm sample` of a random cifar10-32 folder written by save_pretrained,
   1000-step DDPM and 50-step DDIM (`ddpm sample --time --repeat 1`: the sampling call, without loading and
   start-up, cold and then warm in the same context), against a diffusers loop (fp16 UNet +
   DDPMScheduler/DDIMScheduler, timed after a warm-up), eager and with the UNet in a CUDA graph.

Prints a table with ratios and the issue's targets; --json writes every number. Without CUDA (a rehearsal on
a machine with no GPU) it reports what is unavailable and exits 0.

Usage: bench_gpu.py --ddpm build-gpu/carry/bin/ddpm [--json out.json] [--quick] [--conv auto,mma]
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    # diffusers UNet2DModel configs of the published checkpoints (tools/../shared reference unet2d-spec)
    "cifar10-32": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        norm_eps=1e-6, norm_num_groups=32, act_fn="silu"),
    "celebahq-256": dict(
        sample_size=256, in_channels=3, out_channels=3, block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        layers_per_block=2, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        norm_eps=1e-6, norm_num_groups=32, act_fn="silu"),
}

FORWARDS = [("cifar10-32", 1), ("cifar10-32", 128), ("celebahq-256", 1), ("celebahq-256", 4)]
TARGET_MS = {("cifar10-32", 1): 0.5, ("cifar10-32", 128): 6.0, ("celebahq-256", 1): 4.0}


def log(msg):
    print(msg, flush=True)


def run_ddpm(ddpm, args, env_extra, timeout):
    env = dict(os.environ)
    ld = os.environ.get("DDPM_RUN_LD_LIBRARY_PATH")
    if ld:
        env["LD_LIBRARY_PATH"] = ld + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env.update(env_extra)
    t0 = time.perf_counter()
    p = subprocess.run([ddpm] + args, capture_output=True, text=True, env=env, timeout=timeout)
    return p, time.perf_counter() - t0


TUNING_FILE = os.path.join(tempfile.mkdtemp(prefix="bench-gpu-tuning-"), "tuning.ini")


def conv_setting(conv):
    """(environment, extra ddpm options) for a --conv entry: a DDPM_CUDA_CONV value, or "tuned": the defaults with
    `--tune` (engine/tuning.c: every backend variant timed in-process, the fastest that agrees with the defaults
    kept; tuned in the first, untimed warm-up forward, then cached for this run in TUNING_FILE, so a whole sample
    of the same shape finds the decision there)."""
    if conv == "tuned":
        # CONV_PICK_LOG: the per-shape convolution timings of the CONV_PICK=timed variant (kernels/conv_pick.cu)
        return {"DDPM_TUNING_FILE": TUNING_FILE, "DDPM_CUDA_CONV_PICK_LOG": "1"}, ["--tune"]
    return {"DDPM_CUDA_CONV": conv}, []


def log_tuning(key, stderr):
    """The tuner's report (ddpm prints it on stderr even with -q) and the convolution timings of its CONV_PICK
    variant ("conv pick ..." lines), indented under the run's line; returns their lines (for the JSON)."""
    lines = [l[len("ddpm: "):] if l.startswith("ddpm: ") else l for l in stderr.splitlines()]
    start = next((i for i, l in enumerate(lines) if l.startswith("tuning ")), None)
    report = [l for l in lines if l.startswith("conv pick ")]
    for l in report:
        log(f"    {l}")
    # candidates whose output differed from the rule plan's at some shape (kernels/conv_pick.cu): a path that
    # computes something else on this GPU, named once each
    wrong = sorted({m.group(1) for l in report for m in re.finditer(r"[:;] (\w[^;:]*?) [-0-9.]+ ms disagrees", l)})
    if report:
        line = f"conv picks: {len(report)} shapes timed; " + (f"disagreeing with the rule's plan: {'; '.join(wrong)}"
                                                       if wrong else "every candidate agreed with the rule's plan")
        log(f"    {line}")
        report.append(line)
    if start is not None:
        for l in lines[start:]:
            if not (l.startswith("tuning ") or l.startswith("  ")):
                break
            report.append(l)
            log(f"    {l}")
    return report


def failure(p):
    """Why a ddpm run failed, for the log and the JSON: "exit N" or "killed by signal N", then its stderr's end
    (fcae280's ddpm crashed in cuda_destroy with nothing on stderr: "exit -11" said little)."""
    why = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    return f"{why}: {p.stderr.strip()[-400:]}"


def parse_bench_line(out):
    for line in out.splitlines():
        if line.startswith("bench "):
            return {k: v for k, _, v in (kv.partition("=") for kv in shlex.split(line)[1:])}
    return None


def ddpm_forward(ddpm, config, batch, precision, conv, iters, results):
    key = f"ddpm {config} b{batch} {precision} conv={conv}"
    env, extra = conv_setting(conv)
    try:
        p, _ = run_ddpm(ddpm, ["bench", "--config", config, "--batch", str(batch), "--device", "cuda",
                               "--precision", precision, "--iters", str(iters), "--warmup", "3", "-q"] + extra,
                        env, timeout=180)
    except subprocess.TimeoutExpired:
        log(f"  {key}: timed out")
        return None
    fields = parse_bench_line(p.stdout)
    if p.returncode != 0 or fields is None:
        log(f"  {key}: failed ({failure(p)})")
        results[key] = {"error": failure(p)}
        return None
    ms = float(fields["median_ms"])
    results[key] = {"median_ms": ms, "min_ms": float(fields["min_ms"]), "device": fields.get("device_name")}
    log(f"  {key}: median {ms:.3f} ms, min {float(fields['min_ms']):.3f} ms ({fields.get('device_name')})")
    if extra:
        results[key]["tuning"] = log_tuning(key, p.stderr)
    return ms


def torch_unet(torch, config):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(**CONFIGS[config])


def time_cuda(torch, fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def capture_graph(torch, unet, x, t):
    """unet(x, t) captured as a CUDA graph after 3 warm-up calls on a side stream (PyTorch's recipe).
    Returns (graph, output tensor that each replay rewrites)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            unet(x, t)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = unet(x, t).sample
    return g, y


def torch_forward(torch, config, batch, iters, results):
    """diffusers fp16 eager and CUDA-graph forward of one batch, device tensors only (median ms)."""
    unet = torch_unet(torch, config).half().cuda().eval()
    S = CONFIGS[config]["sample_size"]
    x = torch.randn(batch, 3, S, S, device="cuda", dtype=torch.float16)
    t = torch.full((batch,), 500, device="cuda", dtype=torch.long)
    with torch.no_grad():
        eager = time_cuda(torch, lambda: unet(x, t).sample, iters)
        g, y = capture_graph(torch, unet, x, t)
        graph = time_cuda(torch, g.replay, iters)
    del unet, g, y
    torch.cuda.empty_cache()
    results[f"torch {config} b{batch} fp16 eager"] = {"median_ms": eager}
    results[f"torch {config} b{batch} fp16 graph"] = {"median_ms": graph}
    log(f"  torch {config} b{batch} fp16: eager {eager:.3f} ms, CUDA graph {graph:.3f} ms")
    return eager, graph


def write_random_cifar(torch, folder):
    from diffusers import DDPMScheduler
    unet = torch_unet(torch, "cifar10-32")
    unet.save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  variance_type="fixed_large", clip_sample=True).save_pretrained(folder)
    return unet


def ddpm_sample_ms(ddpm, folder, sampler, steps, conv, results):
    """`ddpm sample --time --repeat 1`: the sampling call itself, cold (planning, graph capture, first use of every
    kernel, every step, the copy back) and warm (the same call again in the same context, as PyTorch's loop is
    timed after its warm-up); best of two runs each; the process's wall time (loading and start-up included) is
    kept beside them. Returns (cold, warm) ms or None."""
    key = f"ddpm sample cifar10-32 {sampler} {steps} steps fp16 conv={conv}"
    out = os.path.join(folder, f"out-{sampler}-{steps}.npy")
    args = ["sample", "--model", folder, "--device", "cuda", "--precision", "fp16", "--sampler", sampler,
            "--steps", str(steps), "--seed", "1", "-o", out, "-q", "--time", "--repeat", "1"]
    env, extra = conv_setting(conv)
    best, best_warm, best_wall = None, None, None
    for _ in range(2):   # the second run has warm file caches (and, tuned, the decision cached)
        try:
            p, wall = run_ddpm(ddpm, args + extra, env, timeout=240)
        except subprocess.TimeoutExpired:
            log(f"  {key}: timed out")
            return None
        if p.returncode != 0:
            log(f"  {key}: failed ({failure(p)})")
            results[key] = {"error": failure(p)}
            return None
        vals = dict(t.split("=", 1) for t in p.stdout.split() if "=" in t)
        if "sample_ms" not in vals or "warm_sample_ms" not in vals:
            log(f"  {key}: no sample_ms / warm_sample_ms in the output: {p.stdout.strip()[-200:]}")
            return None
        ms, warm = float(vals["sample_ms"]), float(vals["warm_sample_ms"])
        best = ms if best is None else min(best, ms)
        best_warm = warm if best_warm is None else min(best_warm, warm)
        best_wall = wall if best_wall is None else min(best_wall, wall)
    results[key] = {"ms": best, "warm_ms": best_warm, "wall_s": best_wall}
    log(f"  {key}: cold {best:.1f} ms, warm {best_warm:.1f} ms for {steps} steps ({best_warm / steps:.3f} ms/step "
        f"warm; the repeat gave the same image bit for bit; process wall {best_wall:.2f} s)")
    return best, best_warm


def torch_sample_ms(torch, unet, sampler, steps, use_graph, results):
    from diffusers import DDIMScheduler, DDPMScheduler
    kw = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=True)
    sched = DDPMScheduler(variance_type="fixed_large", **kw) if sampler == "ddpm" else DDIMScheduler(**kw)
    sched.set_timesteps(steps)
    unet = unet.half().cuda().eval()
    x0 = torch.randn(1, 3, 32, 32, device="cuda", dtype=torch.float32, generator=torch.Generator("cuda").manual_seed(0))
    gen = torch.Generator("cuda").manual_seed(1)
    with torch.no_grad():
        if use_graph:
            xs = torch.zeros(1, 3, 32, 32, device="cuda", dtype=torch.float16)
            ts = torch.zeros(1, device="cuda", dtype=torch.long)
            g, eps_s = capture_graph(torch, unet, xs, ts)

            def model(x, t):
                xs.copy_(x)
                ts.fill_(int(t))
                g.replay()
                return eps_s.float()
        else:
            def model(x, t):
                return unet(x.half(), t).sample.float()

        def loop(limit=None):
            x = x0.clone()
            for i, t in enumerate(sched.timesteps):
                if limit is not None and i == limit:
                    break
                x = sched.step(model(x, t), t, x, generator=gen).prev_sample
            return x

        loop(10)   # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loop()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000.0
    key = f"torch sample cifar10-32 {sampler} {steps} steps fp16 {'graph' if use_graph else 'eager'}"
    results[key] = {"ms": ms}
    log(f"  {key}: {ms:.1f} ms ({ms / steps:.3f} ms/step)")
    return ms


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddpm", required=True, help="the ddpm CLI binary")
    ap.add_argument("--json", help="write all numbers here")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, no whole samples")
    ap.add_argument("--conv", default="auto,wgmma,mma,tuned",
                    help="ddpm conv paths to time (DDPM_CUDA_CONV values; auto: the default; tuned: --tune)")
    a = ap.parse_args()
    convs = [c for c in a.conv.split(",") if c]
    results = {"host": os.uname().nodename}

    try:
        import torch
        have_cuda = torch.cuda.is_available()
        results["torch"] = torch.__version__
        if have_cuda:
            results["gpu"] = torch.cuda.get_device_name(0)
            log(f"PyTorch {torch.__version__} on {results['gpu']}")
        else:
            log(f"PyTorch {torch.__version__}: no CUDA device: the PyTorch side is skipped")
    except ImportError as e:
        torch, have_cuda = None, False
        log(f"PyTorch unavailable ({e}): the PyTorch side is skipped")
    have_diffusers = False
    if have_cuda:
        try:
            import diffusers
            have_diffusers = True
            results["diffusers"] = diffusers.__version__
        except ImportError as e:
            log(f"diffusers unavailable ({e}): the PyTorch side is skipped")

    rows = []
    log("== UNet forwards")
    ddpm_runs = True
    for config, batch in FORWARDS:
        iters = 10 if (a.quick or config == "celebahq-256") else 30
        ours = {c: ddpm_forward(a.ddpm, config, batch, "fp16", c, iters, results) if ddpm_runs else None
                for c in convs}
        if ddpm_runs and all(v is None for v in ours.values()):
            err = " ".join(str(results.get(f"ddpm {config} b{batch} fp16 conv={c}", {}).get("error", "")) for c in convs)
            if "CUDA:" in err:   # the backend cannot start at all (no driver / device): don't retry per shape
                log("  ddpm's CUDA backend is unavailable: skipping the other ddpm runs")
                ddpm_runs = False
        eager = graph = None
        if have_diffusers:
            try:
                eager, graph = torch_forward(torch, config, batch, 20, results)
            except Exception as e:   # report and go on: one failure must not hide the other numbers
                log(f"  torch {config} b{batch}: {type(e).__name__}: {e}")
        rows.append((config, batch, ours, eager, graph))
    if not any(v is not None for r in rows for v in r[2].values()):
        log("ddpm's CUDA backend did not run (no GPU?): nothing to compare")

    samples = []
    if not a.quick:
        log("== Whole samples, cifar10-32 32x32 batch 1, fp16")
        with tempfile.TemporaryDirectory() as folder:
            unet = None
            if have_diffusers:
                unet = write_random_cifar(torch, folder)
            else:
                log("  (no diffusers: no random model folder to sample from)")
            for sampler, steps in (("ddpm", 1000), ("ddim", 50)):
                ours = {c: ddpm_sample_ms(a.ddpm, folder, sampler, steps, c, results) if unet is not None else None
                        for c in convs}
                te = tg = None
                if unet is not None:
                    try:
                        te = torch_sample_ms(torch, unet, sampler, steps, False, results)
                        tg = torch_sample_ms(torch, unet, sampler, steps, True, results)
                    except Exception as e:
                        log(f"  torch sample {sampler}: {type(e).__name__}: {e}")
                samples.append((sampler, steps, ours, te, tg))

    log("")
    log(f"== Summary ({results.get('gpu', 'no GPU')}); ms, lower is better; ratio = PyTorch CUDA graph / ddpm best")
    head = "| what | batch | " + " | ".join(f"ddpm fp16 conv={c}" for c in convs) + \
           " | torch fp16 eager | torch fp16 graph | ratio | target |"
    log(head)
    log("|" + "---|" * (head.count("|") - 1))
    for config, batch, ours, eager, graph in rows:
        best = min((v for v in ours.values() if v is not None), default=None)
        ratio = f"{graph / best:.2f}x" if best and graph else "-"
        target = TARGET_MS.get((config, batch))
        tgt = "-" if target is None else (f"<= {target} ms " + ("-" if best is None else "met" if best <= target else "MISSED"))
        log(f"| {config} forward | {batch} | " + " | ".join(fmt(ours[c]) for c in convs) +
            f" | {fmt(eager)} | {fmt(graph)} | {ratio} | {tgt} |")
    for sampler, steps, ours, te, tg in samples:
        # cells: cold / warm; ratio: PyTorch's warm graph loop against our warm sample (and our cold one)
        best = min((v[0] for v in ours.values() if v is not None), default=None)
        warm = min((v[1] for v in ours.values() if v is not None), default=None)
        ratio = f"{tg / warm:.2f}x warm ({tg / best:.2f}x cold)" if best and warm and tg else "-"
        tgt = "-"
        if sampler == "ddpm":
            tgt = "< 1000 ms cold " + ("-" if best is None else "met" if best < 1000 else "MISSED")
        cells = " | ".join("-" if ours[c] is None else f"{ours[c][0]:.1f} / {ours[c][1]:.1f}" for c in convs)
        log(f"| {sampler.upper()} {steps}-step sample 32x32 (cold / warm) | 1 | " + cells +
            f" | {fmt(te)} | {fmt(tg)} | {ratio} | {tgt} |")
    log("ddpm forward times are `ddpm bench` medians: ddpm_context_eps with its host<->device copies of x and eps; "
        "PyTorch times are device-only (CUDA events). Samples: ddpm cold = the first sampling call in a fresh "
        "context (planning, graph capture, first kernel loads), warm = the same call repeated; PyTorch's loops are "
        "timed after a 10-step warm-up with the graph already captured.")
    # each tuned run's kept variant and its conv picks' agreement, so the summary alone says what tuning found
    for key, r in results.items():
        for l in r.get("tuning", []) if isinstance(r, dict) else []:
            if l.startswith("  kept") or l.startswith("conv picks: "):
                log(f"{key}: {l.strip()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
