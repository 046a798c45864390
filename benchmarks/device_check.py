#!/usr/bin/env python
"""The full-size model on one CUDA GPU, in one run of a few minutes: build a random checkpoint of the release's size
and layout (48 layers x 2560, 3.93B parameters, 7.9 GB fp16, with a random VQ-VAE of the release's shape), convert it
with the streaming converter (with the release's tokenizer from tests/fixtures, so the folder has a processor), then:

  load fp16   from_pretrained(dtype=float16, device_map="cuda"): seconds, GPU memory, the VQ-VAE kept float32
  attention   eager / sdpa / flash_attention_2 (when flash_attn imports) logits on the same 1,089 ids, against an
              fp32 reference (the fp16 weights run in fp32), in fp16 and in bf16: max / mean abs differences
  pb-relax    fp16 eager logits stay finite on 1,089 tokens with config.pb_relax_alpha set and without; then with
              layer 0's Q/K projections scaled up until plain fp16 eager attention overflows: PB-relax must stay
              finite (sdpa too)
  load bf16   the same checks as fp16 (VQ-VAE float32 under bf16 too)
  generate    a 1,024-token image (grid 32) at batch 1 and 8, without and with guidance_scale=3, dynamic cache and
              static cache (generate compiles the forward by itself on a GPU): image tokens/s overall and in the
              steady state, first-token latency, peak GPU memory; the images decoded by the VQ-VAE
  pipeline    CogViewPipeline (diffusers) with enable_model_cpu_offload() on the converted folder

Each check runs in its own try/except: an error is recorded in the JSON (benchmarks/results/device_check.json,
rewritten after every phase, so a run cut short keeps what it measured) and the run goes on. Phases are run in
order of importance and skipped once --budget_s would be exceeded (each prints its estimate first); generation
runs also stop at --max_gen_seconds. Exits 2 at once without a CUDA device.

  python benchmarks/device_check.py --quick      # 8 layers: a smoke test (~1-2 min)
  python benchmarks/device_check.py              # the release's size (budget 400 s)
"""

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # the project's modules and convert_full_size, uninstalled too
GB = 1e9
TOKENIZER = REPO / "tests" / "fixtures" / "golden" / "tokenizer" / "cog-pretrain.model"  # the release's SentencePiece
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "device_check.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 layers instead of 48 (a first smoke test); budget 180 s")
    parser.add_argument("--layers", type=int, default=None, help="transformer layers (default 48, or 8 with --quick)")
    parser.add_argument("--work_dir", default=None, help="where the checkpoint and the converted folder go: a fast local disk with "
                        "~17 GB free at full size (default: a temporary folder, removed at the end)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the JSON result")
    parser.add_argument("--budget_s", type=float, default=None, help="skip the phases that would end after this many seconds "
                        "from the start (default 400, or 180 with --quick)")  # fmt: skip
    parser.add_argument("--max_gen_seconds", type=float, default=60.0, help="stop one generation run after this many seconds "
                        "(generate's max_time; the first static-cache run includes compilation)")  # fmt: skip
    parser.add_argument("--new_tokens", type=int, default=1024, help="image tokens per generation (1024 = a full 32x32 grid)")
    parser.add_argument("--batch_sizes", default="1,8", help="comma-separated generation batch sizes")
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--top_k", type=int, default=200)
    parser.add_argument("--pb_relax_alpha", type=float, default=32.0)
    parser.add_argument("--qk_stress", type=float, default=150.0, help="factor on layer 0's q/k projections in the overflow check")
    parser.add_argument("--no_vqvae", action="store_true", help="convert without a VQ-VAE (its checks are then skipped)")
    parser.add_argument("--no_pipeline", action="store_true", help="skip the diffusers pipeline with CPU offload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu_dry_run", action="store_true", help=argparse.SUPPRESS)  # development: every phase on CPU, tiny
    args = parser.parse_args(argv)
    if args.layers is None:
        args.layers = 2 if args.cpu_dry_run else (8 if args.quick else 48)
    if args.budget_s is None:
        args.budget_s = 180.0 if (args.quick or args.cpu_dry_run) else 400.0
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    return args


# ----------------------------------------------------------------------------------------------------------------------
# bookkeeping: phases, estimates, the JSON written after each phase


class Run:
    """Phases in order; each is timed, estimated beforehand, isolated by try/except and recorded."""

    def __init__(self, args, output: Path):
        self.args, self.output, self.start = args, output, time.perf_counter()
        self.result = {"benchmark": "device_check", "command": " ".join(["python benchmarks/device_check.py", *sys.argv[1:]]), "phases": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def phase(self, name: str, estimate_s: float, function, *needs: str, reserve_s: float = 0.0) -> dict | None:
        """Runs `function` unless a phase it needs failed or it would end past the budget (less `reserve_s`, kept for
        a later phase)."""
        record = {"estimate_s": round(estimate_s, 1)}
        self.result["phases"][name] = record
        missing = [need for need in needs if self.result["phases"].get(need, {}).get("status") != "ok"]
        if missing:
            record.update(status="skipped", reason=f"needs {', '.join(missing)}")
        elif self.elapsed() + estimate_s > self.args.budget_s - reserve_s:
            kept = f" - {reserve_s:.0f} s kept for later phases" if reserve_s else ""
            record.update(status="skipped", reason=f"budget: {self.elapsed():.0f} s elapsed + ~{estimate_s:.0f} s > --budget_s {self.args.budget_s:.0f}{kept}")
        if "status" in record:
            print(f"-- {name}: skipped ({record['reason']})", flush=True)
            self.save()
            return None
        print(f"-- {name}: estimate {estimate_s:.0f} s (at {self.elapsed():.0f} s)", flush=True)
        started = time.perf_counter()
        try:
            record.update(function() or {})
            record["status"] = "ok"
        except BaseException as error:  # noqa: BLE001 - recorded, the run goes on (KeyboardInterrupt too: saved, re-raised)
            record.update(status="error", error=f"{type(error).__name__}: {error}"[:2000], traceback=traceback.format_exc()[-4000:])
            print(f"   error: {record['error'][:500]}", flush=True)
            if not isinstance(error, Exception):
                record["seconds"] = round(time.perf_counter() - started, 2)
                self.save()
                raise
        finally:
            free_memory()
        record["seconds"] = round(time.perf_counter() - started, 2)
        shown = {k: v for k, v in record.items() if k not in ("traceback", "estimate_s", "status", "error")}
        print(f"   {record['status']} in {record['seconds']:.1f} s: {json.dumps(shown, default=str)[:600]}", flush=True)
        self.save()
        return record

    def save(self):
        self.result["total_seconds"] = round(self.elapsed(), 1)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.output.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        temporary.replace(self.output)


def estimates(layers: int) -> dict[str, float]:
    """Seconds per phase on an H200 host, scaled by layers (guesses from the 2-core CPU measurements of
    convert_full_size.py: 54 s to build and 25 s to convert the 48-layer checkpoint there)."""
    return {
        "build": 4 + 0.9 * layers,
        "convert": 4 + 0.6 * layers,
        "load": 3 + 0.25 * layers,
        "attention": 4 + 0.15 * layers,
        "pb_relax": 3 + 0.1 * layers,
        "generate_dynamic": 2 + 1024 * (0.004 + 0.0004 * layers),  # launch-bound: ~0.4 ms of kernels per layer and step
        "generate_static": 25 + 0.5 * layers + 1024 * (0.002 + 0.0001 * layers),  # compilation, then CUDA graphs
        "pipeline": 10 + 1024 * (0.004 + 0.0004 * layers),
    }


def generation_plan(args, estimate: dict) -> list[tuple[str, float, int, float | None, bool]]:
    """(name, estimate, batch, guidance, static) in order of importance: small batch plain, with a static cache, large
    batch guided, with a static cache, then the other combinations."""
    batches = args.batch_sizes
    small, large = batches[0], batches[-1]
    plan = [(small, None, False), (small, None, True), (large, args.guidance_scale, False), (large, args.guidance_scale, True)]
    plan += [(b, g, s) for b in batches for g in (None, args.guidance_scale) for s in (False, True) if (b, g, s) not in plan]
    runs = []
    for batch, guidance, static in plan:
        name = f"generate_b{batch}_{'cfg' + format(guidance, 'g') if guidance else 'nocfg'}_{'static' if static else 'dynamic'}"
        seconds = estimate["generate_static" if static else "generate_dynamic"] * (1 + 0.15 * math.log2(batch * (2 if guidance else 1)))
        runs.append((name, min(seconds, args.max_gen_seconds + 5), batch, guidance, static))
    return runs


def free_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def memory(device) -> dict:
    import torch

    if device.type != "cuda":
        return {}
    return {"allocated_gb": round(torch.cuda.memory_allocated(device) / GB, 3), "peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / GB, 3)}


# ----------------------------------------------------------------------------------------------------------------------
# the checkpoint


def write_release_vqvae(path: Path, hidden_channels: int, embed_dim: int, num_embeddings: int, seed: int) -> Path:
    """A random VQ-VAE state dict in the release's layout (`module.enc_b.blocks.*`, `module.quantize_t.embed` [dim, n],
    `module.dec.blocks.*`): our module's initialisation, renamed the other way round from the converter."""
    import torch

    from configuration_cogview import CogViewVQVAEConfig
    from modeling_cogview import CogViewVQVAE

    torch.manual_seed(seed)
    vqvae = CogViewVQVAE(CogViewVQVAEConfig(hidden_channels=hidden_channels, embed_dim=embed_dim, num_embeddings=num_embeddings))
    release = {}
    for key, tensor in vqvae.state_dict().items():
        if key.startswith("encoder."):
            release["enc_b.blocks." + key.removeprefix("encoder.")] = tensor
        elif key.startswith("decoder."):
            release["dec.blocks." + key.removeprefix("decoder.")] = tensor
        elif key == "quantizer.embedding.weight":
            release["quantize_t.embed"] = tensor.t().contiguous()
            release["quantize_t.cluster_size"] = torch.ones(num_embeddings)
            release["quantize_t.embed_avg"] = tensor.t().clone()
        else:
            raise KeyError(key)
    torch.save({"module." + key: tensor for key, tensor in release.items()}, path)
    return path


def sizes(args) -> dict:
    if args.cpu_dry_run:
        return dict(layers=args.layers, hidden=64, heads=4, vocab=58240, positions=1089, vq_hidden=16, vq_dim=8)
    return dict(layers=args.layers, hidden=2560, heads=40, vocab=58240, positions=1089, vq_hidden=512, vq_dim=256)


# ----------------------------------------------------------------------------------------------------------------------
# the checks


def prompt_ids(config, batch: int, text_length: int, seed: int):
    """[ROI1] text [BASE] [BOI1], `text_length` random text ids, one row per sequence (no padding)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(config.text_token_offset, config.command_token_offset, (batch, text_length), generator=generator)
    roi, base, boi = (config.command_token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]"))
    return torch.cat([torch.full((batch, 1), roi), text, torch.tensor([[base, boi]]).expand(batch, 2)], dim=1)


def long_ids(config, batch: int, seed: int):
    """max_position_embeddings (1,089) ids: a text-to-image prompt padded with text, then a full grid of image codes."""
    import torch

    image_tokens = config.num_image_tokens
    prompt = prompt_ids(config, batch, config.max_position_embeddings - image_tokens - 3, seed)
    codes = torch.randint(0, config.image_vocab_size, (batch, image_tokens), generator=torch.Generator().manual_seed(seed + 1))
    return torch.cat([prompt, codes], dim=1)


def flash_attn_available() -> str | None:
    try:
        import flash_attn  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means: not usable here
        return f"flash_attn not importable ({type(error).__name__}: {error})"
    return None


def logits_for(model, ids, implementation: str):
    import torch

    model.set_attn_implementation(implementation)
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def compare(logits, reference) -> dict:
    difference = (logits.float() - reference).abs()
    return {
        "finite": bool(torch_isfinite_all(logits)),
        "max_abs_diff": round(float(difference.max()), 5),
        "mean_abs_diff": round(float(difference.mean()), 6),
        "argmax_agreement": round(float((logits.float().argmax(-1) == reference.argmax(-1)).float().mean()), 5),
    }


def torch_isfinite_all(tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())


def vqvae_dtype_check(model) -> dict:
    if model.vqvae is None:
        return {"vqvae": "none in this checkpoint: skipped"}
    dtypes = sorted({str(p.dtype) for p in model.vqvae.parameters()})
    if dtypes != ["torch.float32"]:
        raise AssertionError(f"the VQ-VAE is {dtypes}, not float32")
    return {"vqvae_dtypes": dtypes}


def load(folder: Path, dtype, device, state: dict) -> dict:
    from modeling_cogview import CogViewForCausalLM

    state.pop("model", None)
    free_memory()
    reset_peak(device)
    start = time.perf_counter()
    model = CogViewForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device.type).eval()
    synchronize(device)
    seconds = time.perf_counter() - start
    state["model"] = model
    transformer_dtypes = sorted({str(p.dtype) for n, p in model.named_parameters() if not n.startswith("vqvae.")})
    if transformer_dtypes != [str(dtype)]:
        raise AssertionError(f"transformer parameters are {transformer_dtypes}, not {dtype}")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"load_seconds": round(seconds, 2), "weights_gb": round(weights / GB, 3), "attn_implementation": model.config._attn_implementation,
            **vqvae_dtype_check(model), **memory(device)}  # fmt: skip


def attention_check(state: dict, device, label: str) -> dict:
    """eager / sdpa / flash_attention_2 logits against the fp32 reference; the first call (fp16) computes it."""
    import torch

    model = state["model"]
    ids = long_ids(model.config, 2, state["seed"]).to(device)
    out = {"tokens": int(ids.shape[1]), "batch": int(ids.shape[0])}
    if "reference" not in state:  # the checkpoint's own fp16 weights, run in fp32 (exact round trip back to fp16)
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            model.model.float()  # the tied head shares the embedding's Parameter: it follows
            state["reference"] = logits_for(model, ids, "sdpa").float()
        finally:
            model.model.to(state["dtype_of_weights"])
            torch.set_float32_matmul_precision(previous)
        out["reference"] = {"what": "sdpa, fp32 compute of the fp16 weights", "logits_std": round(float(state["reference"].std()), 4)}
    reference = state["reference"]
    implementations = ["eager", "sdpa"]
    reason = flash_attn_available() if device.type == "cuda" else "flash_attention_2 needs CUDA"
    if reason is None:
        implementations.append("flash_attention_2")
    else:
        out["flash_attention_2"] = f"skipped: {reason}"
    results = {}
    for implementation in implementations:
        try:
            logits = logits_for(model, ids, implementation)
            results[implementation] = compare(logits, reference)
            state.setdefault("logits", {})[(label, implementation)] = logits
        except Exception as error:  # noqa: BLE001 - one kernel failing does not hide the others
            results[implementation] = {"error": f"{type(error).__name__}: {error}"[:1000]}
        free_memory()
    model.set_attn_implementation("sdpa")
    for a, b in (("eager", "sdpa"), ("sdpa", "flash_attention_2"), ("eager", "flash_attention_2")):
        if (label, a) in state.get("logits", {}) and (label, b) in state["logits"]:
            results[f"{a}_vs_{b}_max_abs_diff"] = round(float((state["logits"][(label, a)].float() - state["logits"][(label, b)].float()).abs().max()), 5)
    state.pop("logits", None)
    out.update(results)
    failed = [name for name in implementations if not results.get(name, {}).get("finite", False)]
    if failed:
        raise AssertionError(f"{label} logits not finite (or failed) for {failed}: {results}")
    return out


def set_pb_relax(model, alpha: float | None):
    """PB-relax's alpha in the config (the "pb_relax" attention implementation reads it), or none."""
    model.config.pb_relax_alpha = alpha


def pb_relax_check(state: dict, device, alpha: float, stress: float) -> dict:
    """fp16 eager on 1,089 tokens: finite with PB-relax and without; then with layer 0's Q and K projections scaled by
    `stress`, plain fp16 eager overflows (QK^T > 65504) while PB-relax and sdpa stay finite."""
    import torch

    model = state["model"]
    ids = long_ids(model.config, 2, state["seed"]).to(device)
    reference = state.get("reference")
    out = {"alpha": alpha, "tokens": int(ids.shape[1])}

    def run(implementation: str, pb_alpha: float | None, against=None) -> tuple[dict, object]:
        set_pb_relax(model, pb_alpha)
        try:
            logits = logits_for(model, ids, "pb_relax" if pb_alpha is not None else implementation)
        finally:
            set_pb_relax(model, None)
        result = {"finite": torch_isfinite_all(logits)}
        if against is not None and result["finite"]:
            result["max_abs_diff"] = round(float((logits.float() - against).abs().max()), 5)
        return result, logits

    out["plain"] = {"vs": "the fp32 reference", "eager": run("eager", None, reference)[0], "eager_pb_relax": run("eager", alpha, reference)[0]}
    attention = model.model.layers[0].self_attn
    saved = {name: getattr(attention, name).weight.detach().clone() for name in ("q_proj", "k_proj")}
    saved_bias = {name: getattr(attention, name).bias.detach().clone() for name in ("q_proj", "k_proj")}
    try:
        with torch.no_grad():
            for name in saved:
                getattr(attention, name).weight.mul_(stress)
                getattr(attention, name).bias.mul_(stress)
        sdpa, sdpa_logits = run("sdpa", None)  # fused kernels accumulate QK^T in fp32
        sdpa_logits = sdpa_logits.float() if sdpa["finite"] else None
        stressed = {"qk_scale": stress, "vs": "fp16 sdpa on the same weights", "sdpa": sdpa,
                    "eager": run("eager", None, sdpa_logits)[0], "eager_pb_relax": run("eager", alpha, sdpa_logits)[0]}  # fmt: skip
        del sdpa_logits
    finally:
        with torch.no_grad():
            for name in saved:
                getattr(attention, name).weight.copy_(saved[name])
                getattr(attention, name).bias.copy_(saved_bias[name])
        model.set_attn_implementation("sdpa")
    stressed["plain_eager_overflowed"] = not stressed["eager"]["finite"]
    out["stressed_layer0"] = stressed
    if not (out["plain"]["eager"]["finite"] and out["plain"]["eager_pb_relax"]["finite"] and stressed["eager_pb_relax"]["finite"]):
        raise AssertionError(f"fp16 logits not finite: {out}")
    return out


class TimingStreamer:
    """Times every decoding step (generate hands each new token to the streamer after a host sync on CUDA)."""

    def __init__(self):
        self.times, self.prompt_seen = [], False

    def put(self, value):
        if not self.prompt_seen:  # generate's first call streams the prompt
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def generation_run(state: dict, device, batch: int, guidance: float | None, static: bool, args) -> dict:
    import torch

    model = state["model"]
    config = model.config
    new_tokens = min(args.new_tokens, config.num_image_tokens)
    ids = prompt_ids(config, batch, 12, args.seed).to(device)
    kwargs = dict(max_new_tokens=new_tokens, do_sample=True, top_k=args.top_k, max_time=args.max_gen_seconds)
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    if static:
        kwargs["cache_implementation"] = "static"
    streamer = TimingStreamer()
    torch.manual_seed(args.seed)
    reset_peak(device)
    weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    sequences = model.generate(ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)
    synchronize(device)
    total = time.perf_counter() - start
    steps = len(streamer.times)
    generated = sequences[:, ids.shape[1] :]
    out = {
        "batch": batch,
        "guidance_scale": guidance,
        "cache": "static + torch.compile" if static and device.type == "cuda" else ("static" if static else "dynamic"),
        "new_tokens": int(generated.shape[1]),
        "complete": int(generated.shape[1]) == new_tokens,
        "seconds": round(total, 2),
        "image_tokens_per_s": round(batch * int(generated.shape[1]) / total, 1),
        "only_image_ids": bool((generated < config.image_vocab_size).all()),
    }
    if steps >= 2:
        step_times = [b - a for a, b in zip(streamer.times, streamer.times[1:])]
        steady = statistics.median(step_times[len(step_times) // 2 :])
        out.update(first_token_s=round(streamer.times[0] - start, 3), steady_step_ms=round(1000 * steady, 3),
                   steady_image_tokens_per_s=round(batch / steady, 1))  # fmt: skip
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(peak_gpu_gb=round(peak / GB, 3), peak_above_weights_gb=round((peak - weights) / GB, 3))
    if not out["only_image_ids"]:
        raise AssertionError(f"non-image ids were generated after [BOI1]: {out}")
    if out["complete"] and model.vqvae is not None:
        start = time.perf_counter()
        pixels = model.decode_image_tokens(generated[:, -config.num_image_tokens :])
        synchronize(device)
        out["decode"] = {"seconds": round(time.perf_counter() - start, 3), "shape": list(pixels.shape), "finite": torch_isfinite_all(pixels)}
    return out


def pipeline_check(folder: Path, device, state: dict, args) -> dict:
    import torch

    if not (folder / "processor_config.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        return {"note": "skipped: the converted folder has no processor (no tokenizer given)"}
    from modeling_cogview import CogViewPipeline

    state.pop("model", None)
    free_memory()
    start = time.perf_counter()
    pipe = CogViewPipeline.from_pretrained(folder, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    load_seconds = time.perf_counter() - start
    if device.type == "cuda":
        pipe.enable_model_cpu_offload()
    reset_peak(device)
    start = time.perf_counter()
    images = pipe("一只可爱的猫", generator=torch.Generator().manual_seed(args.seed), top_k=args.top_k, rerank_candidates=1,
                  output_type="np", progress_bar=False).images  # fmt: skip
    synchronize(device)
    out = {"load_seconds_cpu": round(load_seconds, 2), "seconds": round(time.perf_counter() - start, 2), "images_shape": list(images.shape),
           "finite": bool(__import__("numpy").isfinite(images).all()), "offload": device.type == "cuda", **memory(device)}  # fmt: skip
    if device.type == "cuda":
        out["transformer_device_after"] = str(pipe.transformer.device)
    del pipe
    return out


# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_dry_run:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(f"error: device_check.py needs a CUDA GPU, and torch {torch.__version__} sees none (torch.cuda.is_available() is "
              f"False{'; CUDA_VISIBLE_DEVICES=' + repr(visible) if visible is not None else ''}). Run it on a GPU machine.",
              file=sys.stderr)  # fmt: skip
        return 2
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")

    import numpy as np
    import transformers

    from convert_full_size import release_shapes, write_release_checkpoint
    from modeling_cogview.convert_cogview_checkpoint import convert

    run = Run(args, Path(args.output))
    size = sizes(args)
    shapes = release_shapes(size["layers"], size["hidden"], size["vocab"], size["positions"])
    parameters = sum(int(np.prod(shape)) for shape in shapes.values())
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__}
    for name in ("accelerate", "diffusers", "flash_attn"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    run.result["machine"] = {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "gpu_memory_gb": round(torch.cuda.get_device_properties(device).total_memory / GB, 1) if device.type == "cuda" else None,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs", "versions": versions,
    }  # fmt: skip
    run.result["settings"] = {**size, "parameters": parameters, "checkpoint_gb": round(2 * parameters / GB, 2), "budget_s": args.budget_s,
                              "max_gen_seconds": args.max_gen_seconds, "new_tokens": args.new_tokens, "batch_sizes": args.batch_sizes,
                              "guidance_scale": args.guidance_scale, "top_k": args.top_k}  # fmt: skip
    estimate = {k: v for k, v in estimates(size["layers"]).items()}
    print(f"{size['layers']} layers x {size['hidden']}: {parameters / 1e9:.2f}B parameters, {2 * parameters / GB:.2f} GB fp16, on "
          f"{run.result['machine']['gpu']}; budget {args.budget_s:.0f} s", flush=True)  # fmt: skip

    planned = [estimate["build"], estimate["convert"], 2 * estimate["load"], 2 * estimate["attention"], estimate["pb_relax"],
               *(seconds for _, seconds, *_ in generation_plan(args, estimate)), 0 if args.no_pipeline else estimate["pipeline"]]  # fmt: skip
    print(f"estimated: {sum(planned):.0f} s for every phase (build {estimate['build']:.0f}, convert {estimate['convert']:.0f}, "
          f"load {estimate['load']:.0f} x 2, ...); phases past --budget_s {args.budget_s:.0f} are skipped", flush=True)  # fmt: skip
    run.result["settings"]["estimates_s"] = {k: round(v, 1) for k, v in estimate.items()}

    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="cogview-device-check-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir, folder = work_dir / "cogview-base", work_dir / "cogview-base-hf"
    state = {"seed": args.seed, "dtype_of_weights": torch.float16}
    try:
        free = shutil.disk_usage(work_dir).free
        needed = 4 * parameters + 1 * GB  # the fp16 checkpoint and its fp16 conversion
        if free < needed:
            print(f"error: {work_dir} has {free / GB:.1f} GB free, {needed / GB:.1f} GB needed: pass --work_dir on a larger disk", file=sys.stderr)
            return 2

        def build():
            for stale in (checkpoint_dir, folder):
                shutil.rmtree(stale, ignore_errors=True)
            model_file = write_release_checkpoint(checkpoint_dir, shapes, args.seed)
            out = {"checkpoint_gb": round(model_file.stat().st_size / GB, 3), "work_dir": str(work_dir)}
            if not args.no_vqvae:
                write_release_vqvae(work_dir / "vqvae.pt", size["vq_hidden"], size["vq_dim"], 8192, args.seed)
                out["vqvae"] = f"random, release layout ({size['vq_hidden']} channels, {size['vq_dim']}-d codes, 8192 codes)"
            return out

        run.phase("build_checkpoint", estimate["build"], build)

        def convert_phase():
            tokenizer, note = (TOKENIZER, None) if TOKENIZER.is_file() else (None, f"no tokenizer at {TOKENIZER}: no processor")
            options = dict(num_attention_heads=size["heads"], vqvae_path=None if args.no_vqvae else work_dir / "vqvae.pt", dtype=None, max_shard_size="2GB")
            try:
                result = convert(checkpoint_dir, folder, tokenizer_path=tokenizer, **options)
            except Exception as error:  # noqa: BLE001 - e.g. sentencepiece missing: the model matters more than its processor
                if tokenizer is None:
                    raise
                shutil.rmtree(folder, ignore_errors=True)
                tokenizer, note = None, f"converting with the tokenizer failed ({type(error).__name__}: {error}); converted without"
                result = convert(checkpoint_dir, folder, tokenizer_path=None, **options)
            if not args.keep:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the disk back before loading
            return {"parameters": result.num_parameters, "files": result.weight_files, "processor": tokenizer is not None, "note": note,
                    "vqvae": result.config.vq_config is not None, "folder_gb": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / GB, 3)}  # fmt: skip

        run.phase("convert", estimate["convert"], convert_phase, "build_checkpoint")

        # fp16: load, attention kernels against the fp32 reference, PB-relax
        run.phase("load_fp16", estimate["load"], lambda: load(folder, torch.float16, device, state), "convert")
        run.phase("attention_fp16", estimate["attention"] + estimate["load"] * 0.3, lambda: attention_check(state, device, "fp16"), "load_fp16")
        run.phase("pb_relax_fp16", estimate["pb_relax"], lambda: pb_relax_check(state, device, args.pb_relax_alpha, args.qk_stress), "load_fp16")

        # bf16: load (the fp16 model goes first), attention kernels, then generation
        run.phase("load_bf16", estimate["load"], lambda: load(folder, torch.bfloat16, device, state), "convert")
        run.phase("attention_bf16", estimate["attention"], lambda: attention_check(state, device, "bf16"), "load_bf16")
        state.pop("reference", None)
        free_memory()

        # the first four runs cover both batch sizes, guidance and both caches; the rest leave time for the pipeline
        for index, (name, seconds, batch, guidance, static) in enumerate(generation_plan(args, estimate)):
            reserve = estimate["pipeline"] if index >= 4 and not args.no_pipeline else 0.0
            run.phase(name, seconds, lambda b=batch, g=guidance, s=static: generation_run(state, device, b, g, s, args), "load_bf16", reserve_s=reserve)

        if not args.no_pipeline:
            run.phase("pipeline_cpu_offload", estimate["pipeline"], lambda: pipeline_check(folder, device, state, args), "convert")
    finally:
        state.clear()
        free_memory()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        run.save()

    print_summary(run.result)
    print(f"wrote {args.output} ({run.elapsed():.0f} s)")
    return 0


def print_summary(result: dict):
    print("\n| phase | status | estimate s | seconds | key numbers |\n| --- | --- | --- | --- | --- |")
    for name, record in result["phases"].items():
        if name.startswith("generate"):
            key = {k: record.get(k) for k in ("image_tokens_per_s", "steady_image_tokens_per_s", "peak_gpu_gb", "complete") if k in record}
        elif name.startswith("attention"):
            key = {k: v.get("max_abs_diff") for k, v in record.items() if isinstance(v, dict) and "max_abs_diff" in v}
        elif name.startswith("pb_relax") and "stressed_layer0" in record:
            stressed = record["stressed_layer0"]
            key = {"plain finite": [record["plain"]["eager"]["finite"], record["plain"]["eager_pb_relax"]["finite"]],
                   "stressed eager finite": stressed["eager"]["finite"], "stressed pb-relax finite": stressed["eager_pb_relax"]["finite"]}  # fmt: skip
        elif name.startswith("load"):
            key = {k: record.get(k) for k in ("load_seconds", "allocated_gb", "vqvae_dtypes") if k in record}
        else:
            key = {}
        note = record.get("error") or record.get("reason") or json.dumps(key, ensure_ascii=False, default=str)
        print(f"| {name} | {record.get('status')} | {record.get('estimate_s')} | {record.get('seconds', '')} | {str(note)[:160]} |")


if __name__ == "__main__":
    sys.exit(main())
