#!/usr/bin/env python3
"""train.py: trains a pixel-space DDPM (diffusers UNet2DModel + DDPMScheduler) on a 32x32 RGBA .npz and
writes a diffusers model folder that gimp-ddpm's C engine (and diffusers itself) loads.

Objective: L = || eps - eps_theta(x_t, t) ||^2 (or, with --prediction v_prediction, the v target), t ~ U{0..999},
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
betas linear 1e-4..0.02 over 1000 steps (DDPM, Ho et al. 2020). AdamW, linear LR warm-up then a cosine
decay to --lr-final-frac over the TIME budget (we stop on wall-clock, so the schedule runs on time too),
EMA of the weights with warm-up (decay_n = min(decay, (1 + n) / (10 + n))); the EMA weights are exported.

Data representation (the plug-in must invert this; see MODEL_CARD.md and gimp_ddpm.json):
  4 channels R, G, B, A with PREMULTIPLIED colour (R*A, G*A, B*A, A), each mapped from [0, 1] to [-1, 1].
  Premultiplied so that fully transparent pixels have one defined value (-1, -1, -1, -1) instead of an
  arbitrary hidden colour, and so that a pixel's colour error is weighted by its visibility.
  To make a layer: a = (x3 + 1) / 2, c = (x_rgb + 1) / 2, clamp to [0, 1], c = min(c, a), rgb = c / a
  where a > 0 (colour irrelevant where a = 0).
Horizontal flips are OFF by default: emoji contain text, digits, flags and directional arrows, which a
mirror turns into things that are not emoji; --hflip turns them on.

Precision: bf16 autocast on CUDA (fp32 master weights and EMA), plain fp32 on CPU.
Stopping: --time-budget-minutes (training-loop wall time of this run) and/or --max-steps; it checkpoints
(--work-dir/checkpoint.pt, with optimiser, EMA, step and RNG state) every --ckpt-minutes and at the end,
and --resume continues from it.

Outputs in --out: config.json, diffusion_pytorch_model.safetensors (EMA weights, fp16), scheduler_config.json
(DDPMScheduler, variance_type fixed_small, clip_sample true, epsilon), gimp_ddpm.json (pixel layout),
loss_curve.csv (step, elapsed_s, images_seen, loss = mean training loss since the previous row, lr),
training_summary.json (hyper-parameters, steps, time, hardware, held-out eps-MSE history of the EMA model on
fixed (t, noise) pairs; the same history as CSV is --work-dir/eval_curve.csv). Six files: a device run
brings back at most 8.

Examples:
  python3 tools/train/train.py --data /work/cache/emoji32.npz --arch emoji-base --device cuda \
      --time-budget-minutes 4 --out out/emoji-32 --work-dir /tmp/train-work
  nice -n 10 python3 tools/train/train.py --arch emoji-tiny --device cpu --threads 1 --batch-size 16 \
      --time-budget-minutes 60 --out weights/emoji-32 --work-dir /work/cache/train-cpu
"""
import argparse
import csv
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# Architecture presets. All: sample_size 32, 4 channels in/out, diffusers defaults otherwise
# (flip_sin_to_cos true, freq_shift 0, downsample_padding 1, norm_eps 1e-5, silu, conv up/down).
ARCHS = {
    # GPU model: 6.8M parameters, 13.0 MiB in fp16 (under the 16 MiB a device run can bring back per file).
    # Three levels (32, 16, 8): attention at 16x16 and 8x8 in down blocks 1, 2 and their mirror up blocks,
    # plus the 8x8 mid block; 4 heads of 32 at width 128. A fourth 4x4 level (64,128,128,128) costs
    # 9.3M parameters / 17.7 MiB for little gain at 32x32.
    "emoji-base": dict(
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, norm_num_groups=32, attention_head_dim=32),
    # CPU fallback: ~1.5M parameters, 3 MB in fp16, one resnet per level, attention only at 8x8 + mid;
    # ~1 s per batch of 16 on one shared core.
    "emoji-tiny": dict(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=16, attention_head_dim=32),
    # Photo denoising prior (model 2, RGB 64x64 crops from build_photo_dataset.py): fully convolutional,
    # NO attention anywhere (add_attention false), so it applies to a whole photo of any size (multiples
    # of 8) the same way it saw 64x64 crops; four levels (64, 32, 16, 8) give a 3x3-conv receptive field
    # well past 64 pixels. ~7.6M parameters, ~14.5 MiB fp16.
    "photo-64": dict(
        block_out_channels=(64, 96, 128, 128),
        down_block_types=("DownBlock2D",) * 4, up_block_types=("UpBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, add_attention=False),
}

SCHEDULER = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                 variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
                 prediction_type="epsilon", timestep_spacing="leading", steps_offset=0)

PIXEL_LAYOUTS = {
    4: {"channels": ["R", "G", "B", "A"], "alpha": "premultiplied", "range": [-1.0, 1.0],
        "to_straight_rgba": "a=(x[3]+1)/2; c=min(max((x[0:3]+1)/2,0),a); rgb=c/a where a>0"},
    3: {"channels": ["R", "G", "B"], "alpha": "none", "range": [-1.0, 1.0],
        "to_rgb": "rgb=(x+1)/2 (sRGB-encoded values, as stored in the source images)"},
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/cache/emoji32.npz", help=".npz with train/heldout uint8 (N,32,32,4)")
    ap.add_argument("--out", required=True, help="diffusers model folder to write")
    ap.add_argument("--work-dir", required=True, help="where checkpoint.pt lives (not shipped)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="emoji-base")
    ap.add_argument("--dropout", type=float, default=0.0, help="ResnetBlock2D dropout (identity at inference)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-final-frac", type=float, default=0.1, help="LR at the end of the budget, x --lr")
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--hflip", action="store_true", help="random horizontal flips (off: text, arrows, flags)")
    ap.add_argument("--prediction", choices=["epsilon", "v_prediction"], default="epsilon",
                    help="training target: eps (DDPM) or v = sqrt(abar) eps - sqrt(1-abar) x0 (better "
                         "conditioned near t = T, so DDIM behaves on under-trained models)")
    ap.add_argument("--dihedral", action="store_true",
                    help="random flips + 90-degree rotations, the 8 symmetries of a square (photo crops)")
    ap.add_argument("--time-budget-minutes", type=float, default=0.0, help="training wall time of this run (0: none)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this total step count (0: none)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--log-every", type=int, default=50, help="steps per loss_curve.csv row")
    ap.add_argument("--print-every-s", type=float, default=30.0)
    ap.add_argument("--eval-count", type=int, default=256, help="held-out images in the eval (0: no eval)")
    ap.add_argument("--resume", action="store_true", help="continue from --work-dir/checkpoint.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", default="", help="start from the weights of this diffusers folder (its arch; "
                    "fresh optimiser and schedule): fine-tuning a shipped model")
    ap.add_argument("--t-max", type=int, default=0,
                    help="with --t-max-frac: draw t from U{0..t_max-1} for that fraction of each batch, "
                         "U{0..999} for the rest (a denoising prior only ever runs at small t)")
    ap.add_argument("--t-max-frac", type=float, default=0.0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA; costs start time)")
    a = ap.parse_args(argv)
    if a.time_budget_minutes <= 0 and a.max_steps <= 0:
        ap.error("give --time-budget-minutes and/or --max-steps")
    return a


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train.py: --device cuda but torch sees no CUDA device")
    return dev


def to_model_space(u8):
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]; C = 4 is straight RGBA and becomes
    premultiplied, C = 3 is RGB as it is."""
    x = torch.from_numpy(u8).float().div_(255.0)
    if x.shape[-1] == 4:
        x[..., :3] *= x[..., 3:4]
    return x.permute(0, 3, 1, 2).contiguous().mul_(2.0).sub_(1.0)


def build_unet(arch, dropout, channels, size):
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, dropout=dropout,
                       **ARCHS[arch])


def dihedral(x):
    """Each image of x (B, C, S, S) under one of the 8 square symmetries, chosen at random."""
    b = x.shape[0]
    m = torch.rand(3, b, device=x.device) < 0.5
    x = torch.where(m[0][:, None, None, None], x.flip(3), x)
    x = torch.where(m[1][:, None, None, None], x.flip(2), x)
    return torch.where(m[2][:, None, None, None], x.transpose(2, 3), x)


def lr_at(args, step, progress):
    """Linear warm-up over --warmup-steps, then cosine from lr to lr*lr_final_frac as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
    p = min(max(progress, 0.0), 1.0)
    cos = args.lr_final_frac + (1.0 - args.lr_final_frac) * 0.5 * (1.0 + math.cos(math.pi * p))
    return args.lr * warm * cos


@torch.no_grad()
def ema_update(ema_params, params, decay):
    torch._foreach_mul_(ema_params, decay)
    torch._foreach_add_(ema_params, params, alpha=1.0 - decay)


def eps_from_output(out, xt, a, prediction):
    """The model's eps estimate: its output itself, or for v-prediction eps = sqrt(abar) v + sqrt(1-abar) x_t."""
    if prediction == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * xt
    return out


@torch.no_grad()
def heldout_eps_mse(model, x0, abar, device, seed=1234, batch=256, prediction="epsilon"):
    """Mean eps-MSE on fixed (t, noise): each image at t in {50, 250, 500, 750}; fp32. Returns dict.
    For a v-prediction model the eps implied by its output is scored, so the numbers compare."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    model.eval()
    for t in (50, 250, 500, 750):
        tot, n = 0.0, 0
        for i in range(0, x0.shape[0], batch):
            xb = x0[i:i + batch]
            eps = torch.randn(xb.shape, generator=g).to(device)
            xb = xb.to(device)
            a = abar[t]
            xt = a.sqrt() * xb + (1 - a).sqrt() * eps
            tt = torch.full((xb.shape[0],), t, device=device, dtype=torch.long)
            pred = eps_from_output(model(xt, tt).sample.float(), xt, a, prediction)
            tot += F.mse_loss(pred, eps, reduction="sum").item()
            n += eps.numel()
        out[t] = tot / n
    return out


def tail_loss(loss_csv, frac=0.1):
    """Mean of the last `frac` of the rows of loss_curve.csv (all runs of a resumed training)."""
    with open(loss_csv) as f:
        rows = [float(r["loss"]) for r in csv.DictReader(f)]
    k = max(1, int(len(rows) * frac))
    return sum(rows[-k:]) / k if rows else None


def save_checkpoint(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def export_folder(args, ema_model, summary, out):
    """Writes the EMA weights as a diffusers folder, fp16 safetensors."""
    from diffusers import DDPMScheduler
    from diffusers.utils import logging as dlog
    dlog.set_verbosity_error()
    os.makedirs(out, exist_ok=True)
    cfg = ema_model.config
    half = build_unet(args.arch, args.dropout, cfg.in_channels, cfg.sample_size)
    half.load_state_dict(ema_model.state_dict())
    half = half.to(torch.float16)   # all of UNet2DModel is fine in fp16 (diffusers' keep-in-fp32 list is empty)
    half.save_pretrained(out, safe_serialization=True)
    DDPMScheduler(**dict(SCHEDULER, prediction_type=args.prediction)).save_config(out)
    with open(os.path.join(out, "gimp_ddpm.json"), "w") as f:
        json.dump(PIXEL_LAYOUTS[ema_model.config.in_channels], f, indent=1)
    with open(os.path.join(out, "training_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    ckpt_path = os.path.join(args.work_dir, "checkpoint.pt")
    use_bf16 = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = np.load(args.data)
    meta = json.loads(str(data["meta"])) if "meta" in data else {}
    train_x = to_model_space(data["train"]).to(device)            # (N, 4, 32, 32) on the device
    held_x = to_model_space(data["heldout"][: args.eval_count]) if args.eval_count > 0 else None
    n_train, channels, size = train_x.shape[0], train_x.shape[1], train_x.shape[2]
    if channels not in PIXEL_LAYOUTS or train_x.shape[3] != size:
        raise SystemExit(f"train.py: {args.data}: expected square RGB or RGBA images, got {tuple(train_x.shape)}")

    from diffusers import DDPMScheduler
    sched = DDPMScheduler(**SCHEDULER)
    abar = sched.alphas_cumprod.to(device=device, dtype=torch.float32)   # (1000,)

    model = build_unet(args.arch, args.dropout, channels, size).to(device)
    ema = build_unet(args.arch, args.dropout, channels, size).to(device)
    init_summary = None
    if args.init_from:
        sp = os.path.join(args.init_from, "training_summary.json")
        init_summary = json.load(open(sp)) if os.path.exists(sp) else None
    if args.init_from and not (args.resume and os.path.exists(ckpt_path)):   # a resumed run has its own weights
        from diffusers import UNet2DModel
        src = UNet2DModel.from_pretrained(args.init_from, torch_dtype=torch.float32)
        model.load_state_dict(src.state_dict())      # raises on any arch mismatch
        print(f"initialised from {args.init_from}", flush=True)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    ema.eval()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)

    step, images_seen, elapsed_before, n_ema = 0, 0, 0.0, 0
    eval_history = []                        # dicts of held-out eps-MSE, kept across resumes
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck["arch"] != args.arch:
            raise SystemExit(f"train.py: {ckpt_path} is arch {ck['arch']}, not {args.arch}")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, images_seen, n_ema = ck["step"], ck["images_seen"], ck["n_ema"]
        elapsed_before = ck["elapsed_s"]
        eval_history = ck.get("eval_history", [])
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"].cpu())
        print(f"resumed from {ckpt_path} at step {step} ({elapsed_before / 60:.1f} min trained)", flush=True)
    elif args.resume:
        print(f"--resume: no {ckpt_path}, starting fresh", flush=True)

    run_budget = args.time_budget_minutes * 60.0
    total_budget = elapsed_before + run_budget if run_budget > 0 else 0.0
    train_model = torch.compile(model) if args.compile else model
    ema_params = list(ema.parameters())
    params = list(model.parameters())

    loss_csv = os.path.join(args.out, "loss_curve.csv")
    eval_csv = os.path.join(args.work_dir, "eval_curve.csv")   # also summarised in training_summary.json
    fresh = not (args.resume and step > 0)
    lf = open(loss_csv, "w" if fresh or not os.path.exists(loss_csv) else "a", newline="")
    ef = open(eval_csv, "w" if fresh or not os.path.exists(eval_csv) else "a", newline="")
    lw, ew = csv.writer(lf), csv.writer(ef)
    if lf.tell() == 0:
        lw.writerow(["step", "elapsed_s", "images_seen", "loss", "lr"])
    if ef.tell() == 0:
        ew.writerow(["step", "elapsed_s", "t50", "t250", "t500", "t750", "mean"])

    print(f"arch {args.arch}: {n_params:,} parameters ({2 * n_params / 2**20:.1f} MiB fp16); "
          f"{n_train} train images {channels}x{size}x{size} on {device} ({'bf16 autocast' if use_bf16 else 'fp32'}), "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}", flush=True)

    def run_eval(elapsed):
        if held_x is None:
            return None
        r = heldout_eps_mse(ema, held_x, abar, device, prediction=args.prediction)
        mean = sum(r.values()) / len(r)
        ew.writerow([step, f"{elapsed:.1f}", *(f"{r[t]:.6f}" for t in (50, 250, 500, 750)), f"{mean:.6f}"])
        ef.flush()
        eval_history.append(dict(step=step, elapsed_s=round(elapsed, 1), mean=round(mean, 6),
                                 **{f"t{t}": round(v, 6) for t, v in r.items()}))
        print(f"  held-out eps-MSE (EMA) step {step}: " + " ".join(f"t{t}={v:.4f}" for t, v in r.items())
              + f" mean={mean:.4f}", flush=True)
        return r

    def checkpoint(elapsed):
        save_checkpoint(ckpt_path, dict(
            arch=args.arch, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
            step=step, images_seen=images_seen, n_ema=n_ema, elapsed_s=elapsed, budget_s=total_budget,
            eval_history=eval_history, rng_cpu=torch.get_rng_state(),
            rng_cuda=torch.cuda.get_rng_state() if device.type == "cuda" else None, args=vars(args)))

    step_at_start = step
    lr = lr_at(args, step, 0.0)
    t_start = time.time()
    last_print = last_ckpt = t_start
    acc_loss, acc_n = torch.zeros((), device=device), 0
    model.train()
    stop_reason = "max-steps"
    while True:
        now = time.time()
        elapsed = elapsed_before + (now - t_start)
        if run_budget > 0 and now - t_start >= run_budget:
            stop_reason = "time budget"
            break
        if args.max_steps > 0 and step >= args.max_steps:
            break
        progress = elapsed / total_budget if total_budget > 0 else step / max(1, args.max_steps)
        lr = lr_at(args, step, progress)
        for gparam in opt.param_groups:
            gparam["lr"] = lr

        idx = torch.randint(0, n_train, (args.batch_size,), device=device)
        x0 = train_x[idx]
        if args.hflip:
            flip = torch.rand(args.batch_size, device=device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        if args.dihedral:
            x0 = dihedral(x0)
        t = torch.randint(0, SCHEDULER["num_train_timesteps"], (args.batch_size,), device=device)
        if args.t_max > 0 and args.t_max_frac > 0:
            low = torch.rand(args.batch_size, device=device) < args.t_max_frac
            t = torch.where(low, torch.randint(0, args.t_max, (args.batch_size,), device=device), t)
        eps = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1.0 - a).sqrt() * eps
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = train_model(xt, t).sample
        target = eps if args.prediction == "epsilon" else a.sqrt() * eps - (1.0 - a).sqrt() * x0
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        n_ema += 1
        ema_update(ema_params, params, min(args.ema_decay, (1.0 + n_ema) / (10.0 + n_ema)))
        step += 1
        images_seen += args.batch_size
        acc_loss += loss.detach()
        acc_n += 1

        if step % args.log_every == 0:
            mean_loss = (acc_loss / acc_n).item()
            acc_loss.zero_()
            acc_n = 0
            el = elapsed_before + (time.time() - t_start)
            lw.writerow([step, f"{el:.1f}", images_seen, f"{mean_loss:.6f}", f"{lr:.3e}"])
            lf.flush()
            if time.time() - last_print >= args.print_every_s:
                last_print = time.time()
                rate = (step - step_at_start) / max(1e-9, time.time() - t_start)
                print(f"step {step:6d}  {el / 60:6.2f} min  loss {mean_loss:.4f}  lr {lr:.2e}  "
                      f"{rate:.2f} steps/s", flush=True)
        if time.time() - last_ckpt >= args.ckpt_minutes * 60.0:
            el = elapsed_before + (time.time() - t_start)
            checkpoint(el)
            run_eval(el)
            model.train()
            last_ckpt = time.time()

    elapsed = elapsed_before + (time.time() - t_start)
    if acc_n > 0:
        lw.writerow([step, f"{elapsed:.1f}", images_seen, f"{(acc_loss / acc_n).item():.6f}", f"{lr:.3e}"])
    print(f"stopped ({stop_reason}) at step {step} after {elapsed / 60:.2f} min", flush=True)
    checkpoint(elapsed)
    final_eval = run_eval(elapsed)
    lf.close()
    ef.close()

    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    summary = dict(
        arch=args.arch, unet=ARCHS[args.arch], parameters=n_params, steps=step, images_seen=images_seen,
        epochs=images_seen / n_train, train_minutes=elapsed / 60.0, hardware=hw,
        precision="bf16 autocast, fp32 master weights" if use_bf16 else "fp32",
        batch_size=args.batch_size, lr=args.lr, lr_final_frac=args.lr_final_frac, warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay, dropout=args.dropout, hflip=args.hflip, dihedral=args.dihedral,
        grad_clip=args.grad_clip, channels=channels, sample_size=size,
        weight_decay=args.weight_decay, seed=args.seed, stop_reason=stop_reason,
        t_max=args.t_max, t_max_frac=args.t_max_frac, init_from=args.init_from or None,
        init_from_summary=init_summary,
        heldout_eps_mse={str(k): v for k, v in (final_eval or {}).items()}, eval_history=eval_history,
        final_loss_mean_last_10pct=tail_loss(loss_csv),
        dataset=dict(path=os.path.basename(args.data), **meta), scheduler=dict(SCHEDULER, prediction_type=args.prediction), pixel_layout=PIXEL_LAYOUTS[channels],
        torch=torch.__version__, python=sys.version.split()[0])
    export_folder(args, ema, summary, args.out)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
