#!/usr/bin/env python3
"""make_fixtures.py: golden reference data for the C engine's tests, computed with diffusers itself.

Writes small random-weight diffusers UNet2DModel checkpoints under tests/fixtures/models/<name>/, each with
float64 reference forwards (eps) and, for the cheap ones, 20-step DDPM/DDIM sampling runs with injected
noise, plus tests/fixtures/MANIFEST.json describing every file (shape, dtype, meaning, config facts).

Usage:  python3 tools/make_fixtures.py            (from the repo root; ~1 minute on one CPU core)
Versions: tools/requirements-fixtures.txt.  Rerunning gives byte-identical files.

How the references are computed (the engine must reproduce these):
- Every forward runs on the CPU in float64 (model.double(), inputs upcast), so TF32, threads and
  float32 accumulation order do not enter. The weights used are exactly the ones in the saved file
  (fp16/bf16 files are read back and upcast), i.e. what the engine loads.
- diffusers computes the sinusoidal timestep embedding in float32 even for a float64 model
  (Timesteps/get_timestep_embedding -> .to(self.dtype)); the reference keeps that, as the engine should.
- Schedulers are diffusers' own (DDPMScheduler / DDIMScheduler.from_config of the saved DDPM config), run as
  the DDPM/DDIM pipelines run them, on float64 samples. Their tables (alphas_cumprod) are float32 tensors,
  so each step's coefficients are float32 scalars applied to float64 tensors.
- Noise is injected: x_T = init_noise.npy; the k-th noise draw of a DDPM run is step_noise_ddpm.npy[k]
  (diffusers' DDPMScheduler.step draws with randn_tensor whenever t > 0: patched here to hand out the
  slices); DDIM with eta > 0 takes step_noise_ddim_eta05.npy[k] at every step via variance_noise=.
"""
import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import torch

import diffusers
import diffusers.schedulers.scheduling_ddpm as scheduling_ddpm
import safetensors
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
MODELS = os.path.join(FIXTURES, "models")

D, AD, U, AU = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"
BATCH = 2
EPS_T_PAIRS = [(0, 999), (10, 500), (250, 750)]
SAMPLING_STEPS = 20
DDIM_ETA = 0.5
LEGACY_ATTN = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}

# Each model: UNet2DModel kwargs, DDPMScheduler kwargs, how the weights are stored, and what to compute.
# Channel counts are small to keep files small; the block structure is that of the real checkpoints.
SPECS = [
    dict(
        name="cifar-like", seed=1001, layout="flat", weight_dtype="float32", sampling=True, debug=True,
        trajectories=True,
        unet=dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32, 32),
                  down_block_types=(D, AD, D, D), up_block_types=(U, U, AU, U), layers_per_block=2,
                  attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6, downsample_padding=0,
                  flip_sin_to_cos=False, freq_shift=1),
        scheduler=dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                       variance_type="fixed_large", clip_sample=True),
        facts="google/ddpm-cifar10-32 structure at 1/8 width: 4 levels, attention (single head, "
              "attention_head_dim null -> head_dim = C) at level 1 down / level 2 up / mid, "
              "downsample_padding 0 (pad right+bottom), flip_sin_to_cos false, freq_shift 1, norm_eps 1e-6, "
              "fp32 weights; DDPM linear betas, fixed_large, clip_sample."),
    dict(
        name="celebahq-like", seed=1002, layout="flat", weight_dtype="float32", sampling=False, debug=False,
        legacy_attention=True, eps_hw=64,
        unet=dict(sample_size=64, in_channels=3, out_channels=3, block_out_channels=(16, 16, 32, 32, 32, 32),
                  down_block_types=(D, D, D, D, AD, D), up_block_types=(U, AU, U, U, U, U), layers_per_block=2,
                  attention_head_dim=8, norm_num_groups=8, norm_eps=1e-6, downsample_padding=0,
                  flip_sin_to_cos=False, freq_shift=1),
        scheduler=dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                       variance_type="fixed_small", clip_sample=True),
        facts="google/ddpm-celebahq-256 structure (6 levels) at small width, 64x64; multi-head attention "
              "(attention_head_dim 8 -> 4 heads of 8 at 32 channels) at level 4 down / level 1 up / mid; "
              "LEGACY attention tensor names (query, key, value, proj_attn) with weights stored [C, C, 1, 1]; "
              "fp32 weights; DDPM linear, fixed_small, clip_sample. No sampling refs (64x64 noise is too big)."),
    dict(
        name="fp16-4ch", seed=1003, layout="pipeline", weight_dtype="float16", sampling=True, debug=True,
        unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 48),
                  down_block_types=(D, AD, D), up_block_types=(U, AU, U), layers_per_block=2,
                  attention_head_dim=8, norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0,
                  downsample_padding=1, resnet_time_scale_shift="scale_shift", center_input_sample=True,
                  mid_block_scale_factor=1.414),
        scheduler=dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                       prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False),
        facts="Pipeline layout (model_index.json, unet/, scheduler/); 4 channels (RGBA); FLOAT16 safetensors "
              "(reference uses the fp16-rounded weights upcast to float64); flip_sin_to_cos true, freq_shift 0, "
              "downsample_padding 1 (symmetric), resnet_time_scale_shift scale_shift, center_input_sample true, "
              "mid_block_scale_factor 1.414, attention_head_dim 8 (4 heads at 32 channels, 6 in mid at 48); DDPM "
              "squaredcos_cap_v2, v_prediction, trailing spacing, no clipping, fixed_small."),
    dict(
        name="bf16-tiny", seed=1004, layout="flat", weight_dtype="bfloat16", sampling=True, debug=False,
        drop_config_keys=["attention_head_dim"],
        unet=dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                  down_block_types=(AD, D), up_block_types=(U, AU), layers_per_block=1, norm_num_groups=4),
        scheduler=dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       prediction_type="sample", variance_type="fixed_small_log", steps_offset=1,
                       timestep_spacing="linspace", clip_sample=True),
        facts="BFLOAT16 safetensors (reference from the bf16-rounded weights); attention_head_dim ABSENT from "
              "config.json (diffusers default 8 -> heads = C/8: 2 heads at 16 channels, 4 in mid at 32); "
              "layers_per_block 1; attention at full resolution (level 0, 256 tokens); norm_num_groups 4; "
              "other UNet fields at their defaults (flip true, shift 0, padding 1, eps 1e-5); DDPM scaled_linear "
              "0.00085..0.012, prediction_type sample, fixed_small_log, steps_offset 1, linspace spacing."),
    dict(
        name="demo-tiny", seed=1005, layout="flat", weight_dtype="float16", sampling=False, debug=False,
        eps=False,
        unet=dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                  down_block_types=(D, AD), up_block_types=(AU, U), layers_per_block=2, norm_num_groups=8),
        scheduler=dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                       variance_type="fixed_small", clip_sample=True),
        facts="Random-weight demo model for the README's first command only (see MODEL_CARD.md); "
              "2 levels (16, 32), fp16 weights, no reference data."),
]

DEMO_MODEL_CARD = """# demo-tiny (random weights)

This is NOT a trained model. It is a tiny diffusers UNet2DModel (2 levels, 16/32 channels, sample_size 16,
float16 safetensors, ~0.25 M parameters) with random weights, written by tools/make_fixtures.py.

It exists only so that the README's first command can run end to end (load a model folder, sample, write an
image) before a trained model ships. Its output is structured noise, not pictures.

Files: config.json (UNet2DModel), diffusion_pytorch_model.safetensors (F16), scheduler_config.json
(DDPMScheduler: 1000 steps, linear 1e-4..0.02, fixed_small, clip_sample).
"""

manifest = {}  # relative path -> description dict


def rel(path):
    return os.path.relpath(path, FIXTURES)


def record(path, what, **extra):
    """Adds a written file to the manifest and prints it."""
    entry = dict(what=what, bytes=os.path.getsize(path))
    with open(path, "rb") as f:
        entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
    entry.update(extra)
    manifest[rel(path)] = entry
    shape = f" {extra['shape']} {extra['dtype']}" if "shape" in extra else ""
    print(f"  wrote {rel(path)}{shape} ({entry['bytes']} bytes)")


def save_npy(path, array, what):
    array = np.ascontiguousarray(array)
    assert array.dtype in (np.float32, np.int64), array.dtype
    np.save(path, array, allow_pickle=False)
    record(path, what, shape=list(array.shape), dtype=str(array.dtype))


def perturb_(unet, seed):
    """Random init leaves biases 0 and norms at (1, 0); shift every parameter so such bugs cannot hide.
    Norm weights/biases and all biases: + N(0, 0.05). Weight tensors: + N(0, (0.1 * std(w))^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith(".bias") or "norm" in name:
                p.add_((0.05 * noise).to(p.dtype))
            else:
                p.add_((0.1 * p.detach().double().std() * noise).to(p.dtype))


def legacy_state_dict(state_dict):
    """to_q/to_k/to_v/to_out.0 -> query/key/value/proj_attn, attention weights [C, C] -> [C, C, 1, 1]."""
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for modern, legacy in LEGACY_ATTN.items():
            new_key = new_key.replace(modern, legacy)
        if new_key != key and key.endswith(".weight"):
            value = value.reshape(value.shape[0], value.shape[1], 1, 1)
        out[new_key] = value.contiguous()
    return out


def modern_state_dict(state_dict):
    """Inverse of legacy_state_dict (what the engine's loader must do): legacy names and [C, C, 1, 1] accepted."""
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for modern, legacy in LEGACY_ATTN.items():
            new_key = new_key.replace(legacy, modern)
        if new_key != key and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new_key] = value
    return out


def unet_dir_of(spec):
    base = os.path.join(MODELS, spec["name"])
    return os.path.join(base, "unet") if spec["layout"] == "pipeline" else base


def scheduler_dir_of(spec):
    base = os.path.join(MODELS, spec["name"])
    return os.path.join(base, "scheduler") if spec["layout"] == "pipeline" else base


def write_model(spec):
    """Builds, perturbs and saves one checkpoint folder; returns nothing (references reload from disk)."""
    base = os.path.join(MODELS, spec["name"])
    torch.manual_seed(spec["seed"])
    unet = UNet2DModel(**spec["unet"]).eval()
    perturb_(unet, spec["seed"] + 100)
    scheduler = DDPMScheduler(**spec["scheduler"])
    dtype = getattr(torch, spec["weight_dtype"])
    unet = unet.to(dtype)

    if spec["layout"] == "pipeline":
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(base)
        record(os.path.join(base, "model_index.json"), "DDPMPipeline index: unet/ and scheduler/ subfolders")
    else:
        unet.save_pretrained(base)
        scheduler.save_config(base)

    unet_dir, sched_dir = unet_dir_of(spec), scheduler_dir_of(spec)
    config_path = os.path.join(unet_dir, "config.json")
    weights_path = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
    if spec.get("drop_config_keys"):
        with open(config_path) as f:
            config = json.load(f)
        for key in spec["drop_config_keys"]:
            del config[key]
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
    if spec.get("legacy_attention"):
        state = legacy_state_dict({k: v.detach() for k, v in unet.state_dict().items()})
        save_file(state, weights_path, metadata={"format": "pt"})

    record(config_path, "UNet2DModel config (save_pretrained)"
           + (f"; keys removed: {spec['drop_config_keys']}" if spec.get("drop_config_keys") else ""))
    tensors = load_file(weights_path)
    record(weights_path, f"weights, {spec['weight_dtype']} safetensors"
           + ("; LEGACY attention names, attention weights [C, C, 1, 1]" if spec.get("legacy_attention") else ""),
           n_tensors=len(tensors), n_params=int(sum(t.numel() for t in tensors.values())),
           tensor_dtypes=sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()}))
    record(os.path.join(sched_dir, "scheduler_config.json"), "DDPMScheduler config (save_config)")
    if spec["name"] == "demo-tiny":
        card = os.path.join(base, "MODEL_CARD.md")
        with open(card, "w") as f:
            f.write(DEMO_MODEL_CARD)
        record(card, "model card: random weights, for the README's first command only")


def load_reference_unet(spec):
    """The float64 reference model: config.json as diffusers reads it + the saved tensors upcast to float64."""
    unet_dir = unet_dir_of(spec)
    config = UNet2DModel.load_config(unet_dir)
    unet = UNet2DModel.from_config(config).double().eval()
    state = modern_state_dict(load_file(os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")))
    unet.load_state_dict({k: v.double() for k, v in state.items()}, strict=True)
    return unet


def forward(unet, x, t):
    with torch.no_grad():
        return unet(x, t).sample


def write_eps_refs(spec, unet, ref_dir):
    c, hw = spec["unet"]["in_channels"], spec.get("eps_hw", spec["unet"]["sample_size"])
    g = torch.Generator().manual_seed(spec["seed"] + 200)
    x = torch.randn((BATCH, c, hw, hw), generator=g, dtype=torch.float32)
    save_npy(os.path.join(ref_dir, "x.npy"), x.numpy(), "model input x ~ N(0,1), shared by every eps_*.npy")
    outputs = {}
    for t0, t1 in EPS_T_PAIRS:
        key = f"t{t0}_{t1}"
        t = torch.tensor([t0, t1], dtype=torch.int64)
        eps = forward(unet, x.double(), t)
        outputs[key] = eps
        save_npy(os.path.join(ref_dir, f"t_{key}.npy"), t.numpy(), f"timesteps for eps_{key}.npy, one per batch item")
        save_npy(os.path.join(ref_dir, f"eps_{key}.npy"), eps.float().numpy(),
                 f"UNet output for (x.npy, t_{key}.npy): float64 CPU forward rounded to float32; "
                 f"max|eps| {eps.abs().max().item():.4g}, std {eps.std().item():.4g}")
    save_npy(os.path.join(ref_dir, "t.npy"), np.array(EPS_T_PAIRS[0], dtype=np.int64),
             f"alias of t_t{EPS_T_PAIRS[0][0]}_{EPS_T_PAIRS[0][1]}.npy (goes with eps_t{EPS_T_PAIRS[0][0]}_{EPS_T_PAIRS[0][1]}.npy)")
    return x, outputs


def write_debug_refs(spec, unet, x, ref_dir):
    """Intermediate activations for one forward (t pair 10/500), to localise an engine mismatch."""
    t0, t1 = EPS_T_PAIRS[1]
    out_dir = os.path.join(ref_dir, f"debug_t{t0}_{t1}")
    os.makedirs(out_dir)
    captured = []
    names = ["time_proj", "time_embedding", "conv_in"]
    names += [f"down_blocks.{i}" for i in range(len(unet.down_blocks))] + ["mid_block"]
    names += [f"up_blocks.{i}" for i in range(len(unet.up_blocks))] + ["conv_norm_out"]
    modules = dict(unet.named_modules())
    hooks = []
    for name in names:
        def hook(module, inputs, output, name=name):
            # Down blocks return (hidden, skip tuple): keep the hidden state.
            captured.append((name, output[0] if isinstance(output, tuple) else output))
        hooks.append(modules[name].register_forward_hook(hook))
    forward(unet, x.double(), torch.tensor([t0, t1], dtype=torch.int64))
    for h in hooks:
        h.remove()
    for name, value in captured:
        what = {"time_proj": "sinusoidal embedding (diffusers computes it in float32)",
                "time_embedding": "temb = linear_2(silu(linear_1(emb)))",
                "conv_norm_out": "GroupNorm before the final SiLU + conv_out"}.get(name, f"output of {name}")
        save_npy(os.path.join(out_dir, f"{name}.npy"), value.float().numpy(),
                 f"{what}, for x.npy at t_t{t0}_{t1}.npy (float64 forward, rounded)")


class NoiseFeed:
    """Stands in for diffusers.schedulers.scheduling_ddpm.randn_tensor: hands out the prepared slices in order."""

    def __init__(self, noise):
        self.noise, self.used = noise, 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        assert generator is None and tuple(shape) == tuple(self.noise.shape[1:]), shape
        slice_ = self.noise[self.used].to(dtype)
        self.used += 1
        return slice_


def sample_run(unet, scheduler, kind, eta, init_noise, step_noise, dtype=torch.float64, eps_error=0.0):
    """One sampling loop as DDPMPipeline / DDIMPipeline run it (DDIM: use_clipped_model_output off), with the
    noise injected. Returns (final sample, trajectory list: the sample after each step).
    eps_error > 0 adds N(0, eps_error^2) to the model output at every step (sensitivity diagnostic only)."""
    unet = copy.deepcopy(unet).to(dtype)
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(SAMPLING_STEPS)
    g = torch.Generator().manual_seed(12345)
    x = init_noise.to(dtype)
    trajectory = []
    feed = NoiseFeed(step_noise) if kind == "ddpm" else None
    original = scheduling_ddpm.randn_tensor
    scheduling_ddpm.randn_tensor = feed if feed is not None else original
    try:
        for k, t in enumerate(scheduler.timesteps):
            eps = forward(unet, x, t)
            if eps_error:
                eps = eps + (eps_error * torch.randn(eps.shape, generator=g, dtype=torch.float64)).to(dtype)
            if kind == "ddpm":
                x = scheduler.step(eps, t, x, generator=None).prev_sample
            else:
                noise = step_noise[k].to(dtype) if eta > 0 else None
                x = scheduler.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
            trajectory.append(x)
    finally:
        scheduling_ddpm.randn_tensor = original
    if feed is not None:
        assert feed.used == step_noise.shape[0], (feed.used, step_noise.shape[0])
    return x, trajectory


def teacher_forced_fp32_error(unet, scheduler, kind, eta, init_noise, step_noise, trajectory):
    """Worst |float32 step from the rounded reference state - reference state| over all steps."""
    unet = copy.deepcopy(unet).float()
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(SAMPLING_STEPS)
    original = scheduling_ddpm.randn_tensor
    worst = 0.0
    try:
        for k, t in enumerate(scheduler.timesteps):
            x = init_noise if k == 0 else trajectory[k - 1].float()
            eps = forward(unet, x, t)
            if kind == "ddpm":
                scheduling_ddpm.randn_tensor = NoiseFeed(step_noise[k:k + 1])
                y = scheduler.step(eps, t, x, generator=None).prev_sample
            else:
                y = scheduler.step(eps, t, x, eta=eta, variance_noise=step_noise[k] if eta > 0 else None).prev_sample
            worst = max(worst, float((y.double() - trajectory[k]).abs().max()))
    finally:
        scheduling_ddpm.randn_tensor = original
    return worst


def write_sampling_refs(spec, unet, ref_dir):
    c, hw = spec["unet"]["in_channels"], spec["unet"]["sample_size"]
    shape = (BATCH, c, hw, hw)
    ddpm = DDPMScheduler.from_pretrained(scheduler_dir_of(spec))
    ddim = DDIMScheduler.from_config(ddpm.config)
    g = torch.Generator().manual_seed(spec["seed"] + 300)
    init_noise = torch.randn(shape, generator=g, dtype=torch.float32)
    save_npy(os.path.join(ref_dir, "init_noise.npy"), init_noise.numpy(), "x_T for every sampling run")

    # DDPM draws one noise tensor in every step with t > 0; DDIM with eta > 0 in every step.
    ddpm.set_timesteps(SAMPLING_STEPS)
    ddim.set_timesteps(SAMPLING_STEPS)
    n_draws = int((ddpm.timesteps > 0).sum())
    step_noise = torch.randn((n_draws,) + shape, generator=g, dtype=torch.float32)
    step_noise_eta = torch.randn((SAMPLING_STEPS,) + shape, generator=g, dtype=torch.float32)
    save_npy(os.path.join(ref_dir, "timesteps_ddpm20.npy"), ddpm.timesteps.numpy().astype(np.int64),
             f"DDPMScheduler.set_timesteps({SAMPLING_STEPS}) timesteps, in sampling order")
    save_npy(os.path.join(ref_dir, "timesteps_ddim20.npy"), ddim.timesteps.numpy().astype(np.int64),
             f"DDIMScheduler.from_config(ddpm config).set_timesteps({SAMPLING_STEPS}) timesteps "
             f"(prev timestep inside step = t - {ddim.config.num_train_timesteps // SAMPLING_STEPS})")
    save_npy(os.path.join(ref_dir, "step_noise_ddpm.npy"), step_noise.numpy(),
             f"slice k = noise z of the k-th DDPM step with t > 0 ({n_draws} of {SAMPLING_STEPS} steps draw, "
             "so slice k belongs to step k); added as sigma_t * z")
    save_npy(os.path.join(ref_dir, "step_noise_ddim_eta05.npy"), step_noise_eta.numpy(),
             f"slice k = variance_noise of DDIM step k in the eta={DDIM_ETA} run (every step draws)")

    runs = [("ddpm20", ddpm, "ddpm", 0.0, step_noise), ("ddim20", ddim, "ddim", 0.0, None),
            ("ddim20_eta05", ddim, "ddim", DDIM_ETA, step_noise_eta)]
    results, diagnostics = {}, {}
    for tag, scheduler, kind, eta, noise in runs:
        final, trajectory = sample_run(unet, scheduler, kind, eta, init_noise, noise)
        results[tag] = final
        name = "DDPM" if kind == "ddpm" else f"DDIM eta={eta}"
        # How well conditioned is this run? A float32 PyTorch run of the same loop, and the float64 run with
        # N(0, 1e-5^2) added to every model output, both against the reference: the engine cannot beat these.
        fp32, _ = sample_run(unet, scheduler, kind, eta, init_noise, noise, dtype=torch.float32)
        perturbed, _ = sample_run(unet, scheduler, kind, eta, init_noise, noise, eps_error=1e-5)
        diagnostics[tag] = dict(
            fp32_torch_max_abs=float((fp32.double() - final).abs().max()),
            eps_noise_1e5_max_abs=float((perturbed - final).abs().max()),
            saturated_fraction=float((final.abs() >= 1).double().mean()))
        save_npy(os.path.join(ref_dir, f"sample_{tag}.npy"), final.float().numpy(),
                 f"final raw sample of the {SAMPLING_STEPS}-step {name} run from init_noise.npy "
                 f"(float64 run, rounded); float32 PyTorch gets within {diagnostics[tag]['fp32_torch_max_abs']:.2g}, "
                 f"eps noise 1e-5 per step moves it {diagnostics[tag]['eps_noise_1e5_max_abs']:.2g}")
        if spec.get("trajectories"):
            diagnostics[tag]["teacher_forced_fp32_max_abs"] = teacher_forced_fp32_error(
                unet, scheduler, kind, eta, init_noise, noise, trajectory)
            save_npy(os.path.join(ref_dir, f"traj_{tag}.npy"), torch.stack(trajectory).float().numpy(),
                     f"slice k = sample after step k of the {name} run (last = sample_{tag}.npy): for "
                     "teacher-forced per-step checks (feed slice k-1, or init_noise for k = 0); float32 PyTorch "
                     f"steps are within {diagnostics[tag]['teacher_forced_fp32_max_abs']:.2g} per step")
        print(f"  {tag}: float32 torch vs reference {diagnostics[tag]['fp32_torch_max_abs']:.3g}, "
              f"sensitivity to 1e-5 eps noise {diagnostics[tag]['eps_noise_1e5_max_abs']:.3g}")
    return init_noise, step_noise, step_noise_eta, results, diagnostics


def verify_pipelines(spec, unet, init_noise, step_noise, step_noise_eta, results):
    """Runs diffusers' own DDPMPipeline / DDIMPipeline with the same injected noise: their images must equal
    clamp(sample / 2 + 0.5, 0, 1) of the hand-written loops above, so those loops are what the pipelines do."""
    import diffusers.pipelines.ddim.pipeline_ddim as pipeline_ddim
    import diffusers.pipelines.ddpm.pipeline_ddpm as pipeline_ddpm
    import diffusers.schedulers.scheduling_ddim as scheduling_ddim
    scheduler = DDPMScheduler.from_pretrained(scheduler_dir_of(spec))
    runs = [("ddpm20", DDPMPipeline, {}, step_noise), ("ddim20", DDIMPipeline, dict(eta=0.0), None),
            ("ddim20_eta05", DDIMPipeline, dict(eta=DDIM_ETA), step_noise_eta)]
    patched = [(pipeline_ddpm, "randn_tensor"), (pipeline_ddim, "randn_tensor"),
               (scheduling_ddpm, "randn_tensor"), (scheduling_ddim, "randn_tensor")]
    originals = [getattr(m, n) for m, n in patched]
    try:
        for tag, pipeline_class, kwargs, noise in runs:
            # The pipeline draws x_T first (generator given, so not None: accept it), then the step noise.
            draws = [init_noise] + (list(noise) if noise is not None else [])

            def feed(shape, generator=None, device=None, dtype=None, layout=None):
                return draws.pop(0).reshape(shape).to(dtype)

            for module, name in patched:
                setattr(module, name, feed)
            pipe = pipeline_class(unet=unet, scheduler=copy.deepcopy(scheduler))
            pipe.set_progress_bar_config(disable=True)
            image = pipe(batch_size=BATCH, num_inference_steps=SAMPLING_STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(0), **kwargs).images
            assert not draws, f"{tag}: {len(draws)} noise tensors unused"
            want = (results[tag] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            assert np.array_equal(image, want), f"{tag}: pipeline differs by {np.abs(image - want).max()}"
    finally:
        for (module, name), original in zip(patched, originals):
            setattr(module, name, original)
    print(f"  check: DDPMPipeline / DDIMPipeline (eta 0, {DDIM_ETA}) with the same noise give identical images")


def verify(spec, eps_refs, x):
    """Reloads the folder with diffusers' own loader and checks the saved eps against it."""
    unet_dir = unet_dir_of(spec)
    if spec["layout"] == "pipeline":
        pipe = DDPMPipeline.from_pretrained(os.path.join(MODELS, spec["name"]))
        reloaded, scheduler = pipe.unet, pipe.scheduler
    elif spec.get("legacy_attention"):
        # diffusers renames legacy attention keys on load, but refuses [C, C, 1, 1] for its Linear layers:
        # check the names through diffusers with a squeezed copy, and that the 4-D file differs only by shape.
        tmp = tempfile.mkdtemp()
        try:
            shutil.copy(os.path.join(unet_dir, "config.json"), tmp)
            state = load_file(os.path.join(unet_dir, "diffusion_pytorch_model.safetensors"))
            assert any(".query." in k for k in state) and not any(".to_q." in k for k in state)
            try:
                UNet2DModel.from_pretrained(unet_dir)
                print("  note: diffusers loaded the [C, C, 1, 1] legacy file directly")
            except RuntimeError as e:
                assert "size mismatch" in str(e), e
                print("  check: diffusers refuses legacy [C, C, 1, 1] attention weights (size mismatch), "
                      "accepts the legacy names once squeezed")
            legacy = tuple(LEGACY_ATTN.values())
            squeezed = {k: (v.reshape(v.shape[0], v.shape[1]) if any(n in k for n in legacy) and v.ndim == 4 else v)
                        for k, v in state.items()}
            save_file(squeezed, os.path.join(tmp, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
            reloaded = UNet2DModel.from_pretrained(tmp)
        finally:
            shutil.rmtree(tmp)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir_of(spec))
    else:
        reloaded = UNet2DModel.from_pretrained(unet_dir)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir_of(spec))
    reloaded = reloaded.double().eval()
    for key, value in spec["scheduler"].items():
        assert scheduler.config[key] == value, (key, scheduler.config[key], value)
    worst = 0.0
    for t0, t1 in EPS_T_PAIRS:
        key = f"t{t0}_{t1}"
        again = forward(reloaded, x.double(), torch.tensor([t0, t1], dtype=torch.int64))
        assert torch.equal(again, eps_refs[key]), f"{spec['name']} {key}: reload differs"
        saved = np.load(os.path.join(MODELS, spec["name"], "ref", f"eps_{key}.npy"))
        worst = max(worst, float(np.abs(saved.astype(np.float64) - again.numpy()).max()))
    print(f"  check: diffusers from_pretrained reload reproduces the float64 eps exactly; "
          f"saved float32 eps within {worst:.3g} (float32 rounding)")
    return worst


def config_summary(spec):
    with open(os.path.join(unet_dir_of(spec), "config.json")) as f:
        unet_config = json.load(f)
    with open(os.path.join(scheduler_dir_of(spec), "scheduler_config.json")) as f:
        sched_config = json.load(f)
    return dict(facts=spec["facts"], layout=spec["layout"], weight_dtype=spec["weight_dtype"],
                legacy_attention_names=bool(spec.get("legacy_attention")),
                unet_config=unet_config, scheduler_config=sched_config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated model names (the manifest then lists only those)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore")
    diffusers.utils.logging.set_verbosity_error()

    specs = [s for s in SPECS if not args.only or s["name"] in args.only.split(",")]
    models_summary = {}
    os.makedirs(MODELS, exist_ok=True)
    for spec in specs:
        print(f"{spec['name']}:")
        base = os.path.join(MODELS, spec["name"])
        if os.path.isdir(base):
            shutil.rmtree(base)  # only this script writes here
        write_model(spec)
        models_summary[spec["name"]] = config_summary(spec)
        if not spec.get("eps", True):
            continue
        unet = load_reference_unet(spec)
        ref_dir = os.path.join(base, "ref")
        os.makedirs(ref_dir)
        x, eps = write_eps_refs(spec, unet, ref_dir)
        models_summary[spec["name"]]["eps_max_abs"] = max(float(v.abs().max()) for v in eps.values())
        if spec["debug"]:
            write_debug_refs(spec, unet, x, ref_dir)
        if spec["sampling"]:
            init_noise, step_noise, step_noise_eta, results, diagnostics = write_sampling_refs(spec, unet, ref_dir)
            verify_pipelines(spec, unet, init_noise, step_noise, step_noise_eta, results)
            models_summary[spec["name"]]["sampling_runs"] = {
                k: dict(sample_max_abs=float(v.abs().max()), **diagnostics[k]) for k, v in results.items()}
        verify(spec, eps, x)

    manifest_path = os.path.join(FIXTURES, "MANIFEST.json")
    doc = dict(
        generator="tools/make_fixtures.py",
        scope="lists the files that script writes (tests/fixtures/models/); other fixture folders have their own "
              "generators",
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                      safetensors=safetensors.__version__, numpy=np.__version__, python=sys.version.split()[0]),
        conventions=dict(
            npy="NumPy .npy v1.0, C order, little-endian; float32 unless noted, timesteps int64",
            eps_reference="float64 CPU forward of the saved weights (fp16/bf16 upcast), rounded to float32; "
                          "the sinusoidal time embedding is float32 inside diffusers even in float64",
            sampling="diffusers DDPMScheduler / DDIMScheduler.from_config(ddpm config) stepping float64 samples "
                     "with their float32 alphas_cumprod; batch 2; noise injected from the step_noise files",
            tolerances="engine forward vs eps_*.npy <= 1e-4 max abs; 20-step samples <= 1e-3 max abs",
            conditioning="models.<name>.sampling_runs gives, per run, how far a float32 PyTorch run lands from the "
                         "float64 reference and how far N(0, 1e-5^2) noise on every model output moves it. "
                         "Random-weight eps models make DDIM eta=0 with clip_sample chaotic: cifar-like ddim20 "
                         "amplifies 1e-5 eps noise to ~6e-2 and float32 PyTorch itself misses by ~2.3e-3, so "
                         "compare that run per step (traj_*.npy, teacher-forced), not end to end at 1e-3.",
            legacy_scheduler_key="diffusers 0.42.1 ignores a legacy 'timesteps' key in a DDPMScheduler config "
                                 "(warns, keeps num_train_timesteps=1000): fixtures use standard keys",
        ),
        models=models_summary,
        files=dict(sorted(manifest.items())),
    )
    if args.only and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        old["models"].update(models_summary)
        old["files"] = dict(sorted({**{k: v for k, v in old["files"].items()
                                       if k.split("/")[1] not in models_summary}, **manifest}.items()))
        doc = old
    with open(manifest_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = sum(e["bytes"] for e in doc["files"].values()) + os.path.getsize(manifest_path)
    print(f"wrote {rel(manifest_path)}; {len(doc['files'])} files + manifest, {total / 1e6:.2f} MB in all")


if __name__ == "__main__":
    main()
