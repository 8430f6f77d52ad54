#!/usr/bin/env python3
"""write_model_card.py: writes MODEL_CARD.md into a model folder made by train.py, from its
training_summary.json, config.json and loss_curve.csv (and eval_curve.csv, in the folder or --work-dir).

Usage: python3 tools/train/write_model_card.py --model weights/emoji-32 --fallback yes [--work-dir DIR]
"""
import argparse
import csv
import json
import os
import subprocess


def read_csv(path):
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def debian_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def loss_summary(rows):
    """First, 10%, 50% points and the mean of the last 10% of rows, plus the minimum row."""
    if not rows:
        return "no loss rows"
    loss = [float(r["loss"]) for r in rows]
    k = max(1, len(loss) // 10)
    pick = lambda frac: rows[min(len(rows) - 1, int(frac * (len(rows) - 1)))]
    parts = [f"step {r['step']}: {float(r['loss']):.4f}" for r in (pick(0.0), pick(0.1), pick(0.5))]
    parts.append(f"mean of the last 10% of rows (steps {rows[-k]['step']}-{rows[-1]['step']}): "
                 f"{sum(loss[-k:]) / k:.4f}")
    i = min(range(len(loss)), key=loss.__getitem__)
    parts.append(f"minimum row: {loss[i]:.4f} at step {rows[i]['step']}")
    return "; ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--work-dir", default=None, help="where eval_curve.csv is, when not in --model")
    ap.add_argument("--fallback", choices=["yes", "no"], required=True, help="CPU fallback model?")
    ap.add_argument("--name", default=None)
    ap.add_argument("--sampling-note", default=None, help="a measured line on which sampler/steps work best")
    a = ap.parse_args()

    s = json.load(open(os.path.join(a.model, "training_summary.json")))
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    loss_rows = read_csv(os.path.join(a.model, "loss_curve.csv"))
    eval_rows = read_csv(os.path.join(a.model, "eval_curve.csv")) or \
        read_csv(a.work_dir and os.path.join(a.work_dir, "eval_curve.csv"))
    if not eval_rows and s.get("eval_history"):
        eval_rows = [{k: str(v) for k, v in e.items()} for e in s["eval_history"]]
    st_size = os.path.getsize(os.path.join(a.model, "diffusion_pytorch_model.safetensors"))
    ds = s.get("dataset", {})
    name = a.name or os.path.basename(os.path.normpath(a.model))
    font_ver = debian_version("fonts-noto-color-emoji") or "2.042-0+deb12u1"

    L = []
    L.append(f"# {name}: unconditional 32x32 RGBA emoji generator (DDPM)")
    L.append("")
    if a.fallback == "yes":
        L.append("**CPU fallback.** This small model was trained for about an hour on one shared CPU core so "
                 "that the plug-in has a working default; a larger model trained on a GPU replaces it. Expect "
                 "emoji-like colour blobs and faces rather than clean glyphs.")
    else:
        L.append(f"Trained on {s.get('hardware')} by `tools/train/gpu_train.sh`.")
    L.append("")
    L.append("## Data")
    L.append(f"- Source: Noto Color Emoji, `NotoColorEmoji.ttf` from Debian 12's `fonts-noto-color-emoji` "
             f"({font_ver}); the colour bitmaps (136x128 PNGs, CBDT table) read with fontTools. "
             "Font licence: SIL Open Font License 1.1 (Copyright 2013-2017 Google Inc.).")
    L.append(f"- Counts: {ds.get('glyph_bitmaps', '?')} glyph bitmaps; {ds.get('exact_duplicates', '?')} exact and "
             f"{(ds.get('near_duplicates_hash') or 0) + (ds.get('near_duplicates_rms') or 0)} near duplicates "
             f"removed -> {ds.get('after_dedup', '?')} images; held out by silhouette group "
             f"({ds.get('heldout_groups', '?')} of {ds.get('silhouette_groups', '?')} groups): "
             f"{ds.get('train', '?')} train, {ds.get('heldout', '?')} held-out.")
    L.append("- Preprocessing: padded to 136x136 (transparent), area-resized to 32x32 in premultiplied colour "
             "(`tools/train/build_emoji_dataset.py`). No flips or other augmentation"
             + (" (horizontal flips ON)." if s.get("hflip") else " (emoji hold text, digits, flags and arrows)."))
    L.append("")
    L.append("## Licence")
    L.append("- Training data: SIL OFL 1.1 (Noto Color Emoji). Training code (tools/train/): Apache-2.0, as the "
             "rest of gimp-ddpm. The weights are released with the project under Apache-2.0; keep this card "
             "with them, it names the OFL-1.1 source of the training images.")
    L.append("")
    L.append("## Model")
    L.append(f"- diffusers `UNet2DModel`, sample_size {cfg['sample_size']}, in/out channels "
             f"{cfg['in_channels']}/{cfg['out_channels']}, block_out_channels {cfg['block_out_channels']}, "
             f"layers_per_block {cfg['layers_per_block']}, down {cfg['down_block_types']}, up {cfg['up_block_types']}, "
             f"attention_head_dim {cfg['attention_head_dim']}, norm_num_groups {cfg['norm_num_groups']}.")
    L.append(f"- Parameters: {s['parameters']:,}; `diffusion_pytorch_model.safetensors` is fp16 "
             f"({st_size / 2**20:.1f} MiB), the EMA weights.")
    sc = s.get("scheduler", {})
    L.append(f"- Scheduler (`scheduler_config.json`): DDPMScheduler, {sc.get('num_train_timesteps')} steps, "
             f"{sc.get('beta_schedule')} betas {sc.get('beta_start')}..{sc.get('beta_end')}, "
             f"prediction {sc.get('prediction_type')}, variance {sc.get('variance_type')}, "
             f"clip_sample {sc.get('clip_sample')}.")
    if a.sampling_note:
        L.append(f"- Sampling: {a.sampling_note}")
    L.append("- Pixels (`gimp_ddpm.json`): channels R, G, B, A with PREMULTIPLIED colour, each mapped [0, 1] -> "
             "[-1, 1]; fully transparent = (-1, -1, -1, -1). To a straight-alpha layer: a = (x3 + 1) / 2, "
             "c = clamp((x_rgb + 1) / 2, 0, a), rgb = c / a where a > 0.")
    L.append("")
    L.append("## Training")
    L.append(f"- {s['steps']:,} steps of batch {s['batch_size']} ({s['images_seen']:,} images, "
             f"{s['epochs']:.1f} epochs) in {s['train_minutes']:.1f} min on {s['hardware']}, {s['precision']}.")
    L.append(f"- Objective ||eps - eps_theta(x_t, t)||^2, t uniform; AdamW lr {s['lr']} (warm-up "
             f"{s['warmup_steps']} steps, cosine to {s['lr_final_frac']}x over the time budget), weight decay "
             f"{s['weight_decay']}, grad clip {s['grad_clip']}, dropout {s['dropout']}, EMA decay {s['ema_decay']} "
             f"(warm-up (1+n)/(10+n)), seed {s['seed']}; torch {s['torch']}.")
    L.append(f"- Loss curve: `loss_curve.csv` in this folder (step, elapsed_s, images_seen, loss = mean over "
             f"the rows' steps, lr). {loss_summary(loss_rows)}.")
    if eval_rows:
        L.append("- Held-out eps-MSE of the EMA weights (fixed noise, each held-out image at each t):")
        L.append("")
        L.append("| step | t=50 | t=250 | t=500 | t=750 | mean |")
        L.append("|---|---|---|---|---|---|")
        for r in eval_rows:
            L.append(f"| {r['step']} | {float(r['t50']):.4f} | {float(r['t250']):.4f} | {float(r['t500']):.4f} | "
                     f"{float(r['t750']):.4f} | {float(r['mean']):.4f} |")
    L.append("")
    L.append("## Reproduce")
    L.append("```")
    L.append("apt-get install -y fonts-noto-color-emoji && pip install -r tools/requirements-train.txt")
    L.append("python3 tools/train/build_emoji_dataset.py --out /work/cache/emoji32.npz")
    if a.fallback == "yes":
        L.append(f"nice -n 10 python3 tools/train/train.py --arch {s['arch']} --device cpu --threads 1 "
                 f"--batch-size {s['batch_size']} --lr {s['lr']} --ema-decay {s['ema_decay']} "
                 f"--time-budget-minutes {round(s['train_minutes'])} --out weights/{name} --work-dir /tmp/w")
    else:
        L.append("tools/train/gpu_train.sh MINUTES   # on the GPU machine; see tools/train/README.md")
    L.append("python3 tools/train/eval_emoji.py --model weights/" + name)
    L.append("```")
    with open(os.path.join(a.model, "MODEL_CARD.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {os.path.join(a.model, 'MODEL_CARD.md')}")


if __name__ == "__main__":
    main()
