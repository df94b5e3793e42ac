"""diffusers' schedulers, made as a pipeline makes them from a model's scheduler config, run on a
bank of fixed model outputs: timesteps, sigmas, each step's output, and the img2img cut, for
every sampler, several step counts and several configs.

usage: make_scheduler_fixture.py OUT_DIR
OUT_DIR/configs/{sd15,leading,prk,*_default,...}.json: the scheduler configs used (as in a model
folder; prk: PNDM with its Runge-Kutta warm-up, for pndm only; unipc_*: UniPC's options, for
unipc only; *_default: a scheduler class's own defaults). A case diffusers fails on has no
entries: ours must fail too.
OUT_DIR/expected.safetensors: "bank/eps" [100, 1, 4, 8, 8] (model outputs, one per call),
"bank/x" [1, 4, 8, 8] (start sample), "bank/noise" (img2img noise), and per CFG/SAMPLER/STEPS:
  timesteps, sigmas (sigma schedulers), init_noise_sigma, scaled [calls, ...] (the model input),
  prev [calls, ...] (each step's output), x0 [calls, ...] (pred_original_sample where given,
  LCM's denoised);
per CFG/SAMPLER/STEPS/img2img/STRENGTH: t_start [1] (the first timestep's index, t_start *
order), noised [1, 4, 8, 8], and but for the random samplers the steps after the cut, prev
[calls, ...] (multistep warm-ups start again there).
"""
import copy
import inspect
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler,
                       EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LCMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UniPCMultistepScheduler)
from safetensors.torch import save_file

from make_pipeline_fixture import RANDOM, SAMPLERS, TWINS

SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None}
# What diffusers 0.42 writes for a PNDM scheduler: timestep_spacing "leading" and no
# clip_sample, so DDIM clips and Euler spaces "leading" when made from it.
LEADING = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
           "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
           "timestep_spacing": "leading", "trained_betas": None}
PRK = {**SD15, "skip_prk_steps": False}
# Each scheduler class's own defaults as a model's scheduler config (a tiny pipeline saved with
# `XScheduler()`): linear betas, no steps_offset, PNDM's warm-up, DPM's -Infinity, ...
DEFAULTS = {"pndm_default": PNDMScheduler(), "ddim_default": DDIMScheduler(),
            "euler_default": EulerDiscreteScheduler(), "dpm_default": DPMSolverMultistepScheduler(),
            "unipc_default": UniPCMultistepScheduler(),  # solver_type bh2: DPM++ takes midpoint
            "dpm_heun": DPMSolverMultistepScheduler(solver_type="heun"),
            "cosine": DDIMScheduler(beta_schedule="squaredcos_cap_v2"),
            "zero_snr": DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                      beta_schedule="scaled_linear", beta_start=0.00085,
                                      beta_end=0.012, prediction_type="v_prediction"),
            "x0_pred": DDIMScheduler(prediction_type="sample"),
            "euler_karras": EulerDiscreteScheduler(use_karras_sigmas=True),
            # The other noise schedules asked for by the config: every sampler that has the
            # option takes it (UniPC included); the twins of another schedule turn it off.
            "euler_exponential": EulerDiscreteScheduler(use_exponential_sigmas=True,
                                                        beta_schedule="scaled_linear",
                                                        beta_start=0.00085, beta_end=0.012),
            "dpm_beta": DPMSolverMultistepScheduler(use_beta_sigmas=True),
            "trailing": EulerDiscreteScheduler(timestep_spacing="trailing",
                                               beta_schedule="scaled_linear", beta_start=0.00085,
                                               beta_end=0.012),
            # DPM++ 3M (and for the others, a config written for it); DPM-Solver++ 1S.
            "dpm_order3": DPMSolverMultistepScheduler(solver_order=3, beta_schedule="scaled_linear",
                                                      beta_start=0.00085, beta_end=0.012),
            "dpm_order1": DPMSolverMultistepScheduler(solver_order=1),
            # Final sigma sigma_min: DPM's last step second order from 15 steps on (lower order
            # below), Euler's log-linear sigmas end there.
            "dpm_sigma_min": DPMSolverMultistepScheduler(final_sigmas_type="sigma_min",
                                                         beta_schedule="scaled_linear",
                                                         beta_start=0.00085, beta_end=0.012),
            "dpm_euler_at_final": DPMSolverMultistepScheduler(final_sigmas_type="sigma_min",
                                                              euler_at_final=True,
                                                              lower_order_final=False),
            "euler_log_linear": EulerDiscreteScheduler(interpolation_type="log_linear",
                                                       final_sigmas_type="sigma_min"),
            # UniPC's own options, for unipc only (see ONLY).
            # bh1 and predict_x0 False end in NaN on a final sigma of 0 (refused): sigma_min.
            "unipc_bh1": UniPCMultistepScheduler(solver_type="bh1", beta_schedule="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012,
                                                 final_sigmas_type="sigma_min"),
            "unipc_order3": UniPCMultistepScheduler(solver_order=3),
            "unipc_order1": UniPCMultistepScheduler(solver_order=1, timestep_spacing="leading",
                                                    steps_offset=1),
            "unipc_karras_min": UniPCMultistepScheduler(use_karras_sigmas=True,
                                                        final_sigmas_type="sigma_min",
                                                        timestep_spacing="trailing"),
            "unipc_eps_v": UniPCMultistepScheduler(predict_x0=False, prediction_type="v_prediction",
                                                   final_sigmas_type="sigma_min"),
            "unipc_no_corrector": UniPCMultistepScheduler(disable_corrector=[0, 2],
                                                          lower_order_final=False,
                                                          final_sigmas_type="sigma_min"),
            # Heun's own class (its beta range differs from the others'), one with v-prediction
            # and leading spacing, and a DPM++ 2M SDE config (dpmpp_2m made from it is DPM++ 2M
            # all the same).
            "heun_default": HeunDiscreteScheduler(),
            "heun_v": HeunDiscreteScheduler(prediction_type="v_prediction",
                                            timestep_spacing="leading", steps_offset=1),
            "dpm_sde": DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
                                                   solver_type="heun",
                                                   beta_schedule="scaled_linear",
                                                   beta_start=0.00085, beta_end=0.012),
            # LCM's own defaults (scaled_linear betas) for every sampler, and LCM's options for
            # lcm alone: a distillation over 25 steps (so 50 fail), a timestep scaling small
            # enough that c_skip matters (0.3 at t = 39; with 10 it is about 0), x0 clipping.
            "lcm_default": LCMScheduler(),
            "lcm_options": LCMScheduler(original_inference_steps=25, timestep_scaling=0.02,
                                        clip_sample=True, clip_sample_range=0.8,
                                        prediction_type="v_prediction"),
            # DPM-Solver's lambda_min_clipped, high enough to cut SD's noisiest timesteps off
            # (every sampler reads the config; only the DPM-Solvers use it), by each spacing.
            **{f"dpm_clipped_{spacing}": DPMSolverMultistepScheduler(
                beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                lambda_min_clipped=-2.0, timestep_spacing=spacing)
               for spacing in ("linspace", "leading", "trailing")},
            # DPM++ 2S's own options: whole chunks to a final sigma_min without lowering the
            # last one's order (where the steps fill whole chunks), third order, heun.
            "singlestep_options": DPMSolverSinglestepScheduler(
                final_sigmas_type="sigma_min", lower_order_final=False),
            "singlestep_order3_heun": DPMSolverSinglestepScheduler(
                solver_order=3, solver_type="heun", final_sigmas_type="sigma_min",
                lower_order_final=False, beta_schedule="scaled_linear", beta_start=0.00085,
                beta_end=0.012, lambda_min_clipped=-2.5)}
# The exponential and beta twins run on these configs alone (their steps are their Karras
# twins'; what differs is the sigmas, at the ends of each kind of schedule).
TWIN_CONFIGS = {"sd15", "leading", "euler_default", "heun_default", "cosine", "trailing",
                "dpm_sigma_min", "euler_exponential", "dpm_beta"}
# Configs with options only one sampler has: run for that one alone.
ONLY = {"prk": "pndm", "lcm_options": "lcm", "singlestep_options": "dpmpp_2s",
        "singlestep_order3_heun": "dpmpp_2s",
        **{k: "unipc" for k in DEFAULTS if k.startswith("unipc_") and k != "unipc_default"}}


def as_pipeline_loads_it(cfg):
    """The model's scheduler after StableDiffusionPipeline's __init__ (which rewrites
    steps_offset and clip_sample of old configs): samplers are made from its config."""
    model = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=None,
                                   scheduler=model, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.scheduler.config
STEPS = [1, 2, 3, 10, 25, 50]
PRK_STEPS = [4, 5, 10, 25, 50]  # fewer than 4: diffusers fails (and so do we, with a message)
STRENGTHS = [0.3, 0.75, 1.0]


def run_after_cut(tensors, key, sched, bank, start):
    x = tensors[f"{key}/noised"]
    prev = []
    for i, t in enumerate(sched.timesteps[start:]):
        sched.scale_model_input(x, t)  # as a pipeline calls it (Euler and Heun warn without)
        x = sched.step(bank["bank/eps"][i], t, x).prev_sample
        prev.append(x)
    tensors[f"{key}/prev"] = torch.stack(prev).contiguous()


def run(tensors, key, sched, bank, eta=None):
    ts = sched.timesteps
    tensors[f"{key}/timesteps"] = ts.clone()
    if hasattr(sched, "sigmas") and not isinstance(sched, (PNDMScheduler, DDIMScheduler)):
        tensors[f"{key}/sigmas"] = sched.sigmas.clone().float()
    tensors[f"{key}/init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)])
    x = bank["bank/x"] * sched.init_noise_sigma
    g = torch.Generator().manual_seed(42)
    scaled, prev, x0 = [], [], []
    for i, t in enumerate(ts):
        inp = sched.scale_model_input(x, t)
        takes_generator = "generator" in inspect.signature(sched.step).parameters
        kwargs = {"generator": g} if takes_generator else {}
        if eta is not None:
            kwargs["eta"] = eta
        out = sched.step(bank["bank/eps"][i], t, x, **kwargs)
        scaled.append(inp)
        x = out.prev_sample
        prev.append(x)
        # LCM's estimate is `denoised` (c_skip * sample + c_out * x0), what the pipeline shows.
        est = getattr(out, "pred_original_sample", None)
        est = est if est is not None else getattr(out, "denoised", None)
        if est is not None:
            x0.append(est)
    tensors[f"{key}/scaled"] = torch.stack(scaled).contiguous()
    tensors[f"{key}/prev"] = torch.stack(prev).contiguous()
    if x0:
        tensors[f"{key}/x0"] = torch.stack(x0).contiguous()


def main(out_dir):
    warnings.filterwarnings("ignore", category=FutureWarning)  # the pipeline's config rewrite
    out = Path(out_dir)
    (out / "configs").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    bank = {"bank/eps": torch.randn(100, 1, 4, 8, 8, generator=g),  # Heun: 2 * 50 - 1 calls
            "bank/x": torch.randn(1, 4, 8, 8, generator=g),
            "bank/x0": torch.randn(1, 4, 8, 8, generator=g),
            "bank/noise": torch.randn(1, 4, 8, 8, generator=g)}
    tensors = dict(bank)
    configs = [("sd15", SD15), ("leading", LEADING), ("prk", PRK)]
    for cfg_name, made in DEFAULTS.items():
        with tempfile.TemporaryDirectory() as d:
            made.save_config(d)  # the file as a model folder has it (-Infinity included)
            configs.append((cfg_name, json.loads((Path(d) / "scheduler_config.json").read_text())))
    for cfg_name, file_cfg in configs:
        (out / "configs" / f"{cfg_name}.json").write_text(json.dumps(file_cfg, indent=2))
        cfg = as_pipeline_loads_it(file_cfg)
        for name, (cls, extra) in SAMPLERS.items():
            if ONLY.get(cfg_name, name) != name or (name in TWINS and cfg_name not in TWIN_CONFIGS):
                continue
            # Made once and copied for each use: the DPM2s' constructors set up a 1000-step
            # schedule (0.3 s each).
            made = cls.from_config(cfg, **extra)
            for n in (STEPS if cfg_name != "prk" else PRK_STEPS):
                sched = copy.deepcopy(made)
                try:
                    sched.set_timesteps(n)
                    run(tensors, f"{cfg_name}/{name}/{n}", sched, bank)
                    if any(v.isnan().any() for k, v in tensors.items()
                           if k.startswith(f"{cfg_name}/{name}/{n}/")):
                        # DPM2 a with 2 steps on linear betas: sigma_down of a negative number.
                        raise ValueError("NaN in the schedule or the steps")
                except (ValueError, NotImplementedError, IndexError, AssertionError) as e:
                    # A refusal (e.g. PNDM's warm-up with fewer than 4 steps) or a crash.
                    print(f"{cfg_name}/{name}/{n}: diffusers fails: {type(e).__name__}: {e}")
                    tensors = {k: v for k, v in tensors.items()
                               if not k.startswith(f"{cfg_name}/{name}/{n}/")}
                    # A crash, not a refusal (UniPC's repeated timesteps trip an assert):
                    # nothing to compare.
                    if isinstance(e, (IndexError, AssertionError)):
                        tensors[f"{cfg_name}/{name}/{n}/diffusers_breaks"] = torch.tensor([1])
                    continue
                for strength in STRENGTHS:
                    sched = copy.deepcopy(made)
                    sched.set_timesteps(n)
                    init = min(int(n * strength), n)
                    first = max(n - init, 0) * sched.order  # the first timestep's index
                    if len(sched.timesteps[first:]) < 1:
                        continue  # diffusers' img2img fails: nothing left to denoise
                    if hasattr(sched, "set_begin_index"):
                        sched.set_begin_index(first)
                    t = sched.timesteps[first:][:1]
                    noised = sched.add_noise(bank["bank/x0"], bank["bank/noise"], t)
                    k = f"{cfg_name}/{name}/{n}/img2img/{strength}"
                    tensors[f"{k}/t_start"] = torch.tensor([first])
                    tensors[f"{k}/noised"] = noised.contiguous()
                    if name not in RANDOM:  # the deterministic ones: warm-ups restart
                        run_after_cut(tensors, k, sched, bank, first)
            if name == "ddim":
                for n in (10, 25):
                    sched = cls.from_config(cfg)
                    sched.set_timesteps(n)
                    run(tensors, f"{cfg_name}/ddim_eta/{n}", sched, bank, eta=0.5)
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
