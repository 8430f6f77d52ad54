#!/usr/bin/env python3
"""make_scheduler_fixtures.py: golden data for tests/test_scheduler.c, straight from diffusers.

Writes tests/fixtures/scheduler/:
  manifest.json              every case: the scheduler config as a dict (the keys of scheduler_config.json,
                             with _class_name) plus the file (and row) that holds its numbers
  table_<name>.npy           (2, N) float32: row 0 betas, row 1 alphas_cumprod, as the scheduler holds them
  ts_<name>.npy              (L,) int64: scheduler.timesteps after set_timesteps(num_steps)
  steps_<sampler>.npy        (K, 7, 1, 3, 4, 4) float32, per case k the rows
                             [x, model_output, noise, prev_sample, pred_original_sample,
                              prev_sample_ieee, pred_original_sample_ieee]

Step inputs are consistent with their timestep (x = sqrt(abar) x0 + sqrt(1 - abar) eps, model output =
the true eps / x0 / v plus 0.2 N(0,1) of model error), because that is what the sampler feeds the step;
a few "raw" cases use unrelated N(0,1) inputs to show the worst case of the x0 division at large t.
The *_ieee rows are the same diffusers step with torch's float32 sqrt / exp / log replaced by correctly
rounded ones (computed in float64, rounded once): torch 2.13's CPU sqrt (this build uses MKL) is off by
1 ulp for ~20% of inputs, and at t ~ T x0 = (x - sqrt(1 - abar) m) / sqrt(abar) amplifies one ulp of
sqrt(1 - abar) ~350 times. The C engine uses IEEE sqrtf, so it must match the *_ieee rows bit for bit and
the stock rows within rounding.
Noise is injected: DDIMScheduler.step and DDPMScheduler.step both draw it with randn_tensor, which we
monkeypatch to return the case's noise and to record whether the step drew noise at all.

Usage: python3 tools/make_scheduler_fixtures.py [outdir]   (needs torch, diffusers 0.42.x, numpy)
"""
import contextlib
import itertools
import json
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddim, scheduling_ddpm

SHAPE = (1, 3, 4, 4)
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                           "scheduler")

BETAS = {
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
}


def config_dict(sched):
    d = {"_class_name": type(sched).__name__}
    for k, v in sched.config.items():
        if k.startswith("_"):
            continue
        d[k] = v
    return d


def save(name, array):
    np.save(os.path.join(OUT, name), array)
    return name


# ---- noise injection -------------------------------------------------------------------------------

class NoiseInjector:
    """Replaces randn_tensor in both scheduler modules; remembers whether a step drew noise."""

    def __init__(self):
        self.noise = None
        self.calls = 0
        scheduling_ddpm.randn_tensor = self
        scheduling_ddim.randn_tensor = self

    def __call__(self, shape, generator=None, device=None, dtype=None, **kw):
        assert tuple(shape) == tuple(self.noise.shape), (shape, self.noise.shape)
        assert dtype in (None, torch.float32)
        self.calls += 1
        return self.noise.clone()


INJECT = NoiseInjector()


class IeeeMath:
    """Within the block, Tensor ** 0.5, torch.sqrt, torch.exp and torch.log on float32 round the float64
    result once (correctly rounded sqrt; exp/log to within float64's error before the final rounding)."""

    def __enter__(self):
        self.saved = (torch.Tensor.__pow__, torch.sqrt, torch.exp, torch.log)
        pow_, sqrt_, exp_, log_ = self.saved

        def ieee(fn):
            def wrapped(t, *a, **kw):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and not a and not kw:
                    return fn(t.double()).float()
                return fn(t, *a, **kw)
            return wrapped

        def pow_ieee(t, e):
            if t.dtype == torch.float32 and isinstance(e, float) and e == 0.5:
                return sqrt_(t.double()).float()
            return pow_(t, e)

        torch.Tensor.__pow__ = pow_ieee
        torch.sqrt, torch.exp, torch.log = ieee(sqrt_), ieee(exp_), ieee(log_)
        return self

    def __exit__(self, *exc):
        torch.Tensor.__pow__, torch.sqrt, torch.exp, torch.log = self.saved
        return False


# ---- tables --------------------------------------------------------------------------------------

def make_tables(manifest):
    cases = []
    for (bname, n) in [("linear", 1000), ("scaled_linear", 1000), ("squaredcos_cap_v2", 1000),
                       ("linear", 37), ("scaled_linear", 37), ("squaredcos_cap_v2", 37),
                       ("linear", 4000), ("linear", 1), ("linear", 2)]:
        ddpm = DDPMScheduler(num_train_timesteps=n, **BETAS[bname])
        ddim = DDIMScheduler(num_train_timesteps=n, **BETAS[bname])
        assert torch.equal(ddpm.betas, ddim.betas) and torch.equal(ddpm.alphas_cumprod, ddim.alphas_cumprod)
        assert ddpm.betas.dtype == torch.float32 and ddpm.alphas_cumprod.dtype == torch.float32
        table = torch.stack([ddpm.betas, ddpm.alphas_cumprod]).numpy()
        name = save(f"table_{bname}_{n}.npy", table)
        cases.append({"config": config_dict(ddpm), "file": name})
    manifest["tables"] = cases


# ---- timesteps -----------------------------------------------------------------------------------

def make_timesteps(manifest):
    cases = []
    grid = [(1000, [1, 3, 7, 10, 20, 50, 61, 103, 999, 1000]), (37, [1, 2, 5, 36, 37])]
    for (n_train, steps_list), spacing, offset in itertools.product(grid, ["leading", "trailing", "linspace"], [0, 1]):
        for n in steps_list:
            ddpm = DDPMScheduler(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
            ddim = DDIMScheduler(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
            ddpm.set_timesteps(n)
            ddim.set_timesteps(n)
            ts = ddpm.timesteps.numpy().astype(np.int64)
            assert np.array_equal(ts, ddim.timesteps.numpy()), (spacing, n)
            name = save(f"ts_{n_train}_{spacing}_off{offset}_n{n}.npy", ts)
            cases.append({"config": config_dict(ddpm), "num_steps": n, "file": name, "length": int(ts.shape[0]),
                          "min": int(ts.min()), "max": int(ts.max())})
    manifest["timesteps"] = cases


# ---- steps ---------------------------------------------------------------------------------------

def step_inputs(rng, abar, prediction_type, raw):
    """x, model_output, noise (float32, SHAPE) for a step at cumulative alpha abar."""
    noise = rng.standard_normal(SHAPE)
    if raw:
        return (rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal(SHAPE).astype(np.float32),
                noise.astype(np.float32))
    x0 = rng.uniform(-1.3, 1.3, SHAPE)
    eps = rng.standard_normal(SHAPE)
    x = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps
    err = 0.2 * rng.standard_normal(SHAPE)
    if prediction_type == "epsilon":
        m = eps + err
    elif prediction_type == "sample":
        m = x0 + err
    else:
        m = np.sqrt(abar) * eps - np.sqrt(1.0 - abar) * x0 + err
    return x.astype(np.float32), m.astype(np.float32), noise.astype(np.float32)


def run_step(sched, kind, eta, num_steps, i, rng, raw):
    sched.set_timesteps(num_steps)
    t = sched.timesteps[i]
    abar = float(sched.alphas_cumprod[int(t)])
    x, m, noise = step_inputs(rng, abar, sched.config.prediction_type, raw)
    INJECT.noise = torch.from_numpy(noise)
    outs, drew = [], []
    for ieee in (False, True):
        INJECT.calls = 0
        with IeeeMath() if ieee else contextlib.nullcontext():
            if kind == "ddpm":
                out = sched.step(torch.from_numpy(m), t, torch.from_numpy(x))
            else:
                out = sched.step(torch.from_numpy(m), t, torch.from_numpy(x), eta=eta)
        assert INJECT.calls in (0, 1)
        drew.append(INJECT.calls == 1)
        outs += [out.prev_sample.numpy(), out.pred_original_sample.numpy()]
    assert drew[0] == drew[1]
    rows = np.stack([x, m, noise] + outs)
    assert rows.dtype == np.float32
    return int(t), drew[0], rows


def make_steps(manifest):
    rng = np.random.default_rng(20240611)
    spacings = ["leading", "trailing", "linspace"]
    groups = {}

    # DDPM: every (beta, variance, prediction, clip); spacing and steps_offset cycle through all six
    # combinations so that every pair of options meets at least once.
    ddpm_cfgs = []
    for k, (bname, var, pred, clip) in enumerate(itertools.product(
            BETAS, ["fixed_small", "fixed_small_log", "fixed_large"], ["epsilon", "sample", "v_prediction"],
            [True, False])):
        ddpm_cfgs.append((bname, var, pred, clip, spacings[k % 3], (k // 3) % 2, 1.0 if k % 4 else 1.5))
    for spacing, offset in itertools.product(spacings, [0, 1]):
        ddpm_cfgs.append(("linear", "fixed_small", "epsilon", True, spacing, offset, 1.0))

    # DDIM: every (beta, prediction, clip, set_alpha_to_one, eta), spacing and offset cycling.
    ddim_cfgs = []
    for k, (bname, pred, clip, one, eta) in enumerate(itertools.product(
            BETAS, ["epsilon", "sample", "v_prediction"], [True, False], [True, False], [0.0, 0.5])):
        ddim_cfgs.append((bname, pred, clip, one, eta, spacings[k % 3], (k // 3) % 2, 1.0 if k % 4 else 1.5))
    for spacing, offset, eta in itertools.product(spacings, [0, 1], [0.0, 1.0]):
        ddim_cfgs.append(("linear", "epsilon", True, True, eta, spacing, offset, 1.0))

    for kind, cfgs in (("ddpm", ddpm_cfgs), ("ddim", ddim_cfgs)):
        cases, rows = [], []
        for k, c in enumerate(cfgs):
            if kind == "ddpm":
                bname, var, pred, clip, spacing, offset, crange = c
                sched = DDPMScheduler(variance_type=var, prediction_type=pred, clip_sample=clip,
                                      clip_sample_range=crange, timestep_spacing=spacing, steps_offset=offset,
                                      **BETAS[bname])
                eta = 0.0
            else:
                bname, pred, clip, one, eta, spacing, offset, crange = c
                sched = DDIMScheduler(prediction_type=pred, clip_sample=clip, clip_sample_range=crange,
                                      set_alpha_to_one=one, timestep_spacing=spacing, steps_offset=offset,
                                      **BETAS[bname])
            num_steps = 10 if k % 2 == 0 else 20
            # The raw cases: the first 4 configs of each sampler, at their first step (t near T).
            plan = [(0, False), (num_steps // 2, False), (num_steps - 1, False)]
            if k < 4:
                plan.append((0, True))
            for i, raw in plan:
                t, drew, r = run_step(sched, kind, eta, num_steps, i, rng, raw)
                cases.append({"config": config_dict(sched), "sampler": kind, "eta": eta, "num_steps": num_steps,
                              "step_index": i, "timestep": t, "draws_noise": drew, "raw_inputs": raw,
                              "row": len(rows)})
                rows.append(r)
        name = save(f"steps_{kind}.npy", np.stack(rows))
        groups[kind] = {"file": name, "row_layout": ["x", "model_output", "noise", "prev_sample",
                                                     "pred_original_sample", "prev_sample_ieee",
                                                     "pred_original_sample_ieee"],
                        "shape": list(SHAPE), "cases": cases}
    manifest["steps"] = groups


def dump_manifest(manifest):
    """JSON with one case per line: readable in a diff, a third of the size of indent=1."""
    def compact(v):
        return json.dumps(v, separators=(",", ":"))

    def cases(lst, indent):
        return "[\n" + ",\n".join(indent + compact(c) for c in lst) + "]"

    out = []
    for k, v in manifest.items():
        if k in ("tables", "timesteps"):
            out.append(f' "{k}": ' + cases(v, "  "))
        elif k == "steps":
            groups = []
            for g, d in v.items():
                head = ",".join(f"{compact(hk)}:{compact(hv)}" for hk, hv in d.items() if hk != "cases")
                groups.append(f'  "{g}": {{{head},"cases":' + cases(d["cases"], "   ") + "}")
            out.append(' "steps": {\n' + ",\n".join(groups) + "}")
        else:
            out.append(f" {compact(k)}: {compact(v)}")
    return "{\n" + ",\n".join(out) + "}\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    manifest = {"generator": "tools/make_scheduler_fixtures.py", "diffusers": diffusers.__version__,
                "torch": torch.__version__, "numpy": np.__version__,
                "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    make_tables(manifest)
    make_timesteps(manifest)
    make_steps(manifest)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        f.write(dump_manifest(manifest))
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
