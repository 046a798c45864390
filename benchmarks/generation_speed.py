#!/usr/bin/env python
"""Image-token generation speed of CogView's generate on this machine: batch 1 and 8, with and without the KV
cache, dynamic vs static cache, with and without classifier-free guidance. Writes a JSON result.

A small config (the size of the bundled digits model's class): a random model suffices, speed does not depend on
the weights."""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM


def small_config(grid: int) -> CogViewConfig:
    return CogViewConfig(
        vocab_size=1664, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
        max_position_embeddings=grid * grid + 64, image_vocab_size=512, text_vocab_size=1000, image_grid_size=grid,
        hidden_dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip


def time_generation(model, batch: int, repeats: int, **options) -> float:
    config = model.config
    prompt = torch.tensor([[config.command_token_id("[ROI1]"), 600, 601, 602, config.command_token_id("[BASE]"), config.command_token_id("[BOI1]")]] * batch)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.generate(prompt, progress_bar=False, **options)
        best = min(best, time.perf_counter() - start)
    assert out.shape[1] == prompt.shape[1] + config.num_image_tokens
    return batch * config.num_image_tokens / best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=16, help="image grid side (16 -> 256 tokens per image)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "generation_speed.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CogViewForCausalLM(small_config(args.grid)).eval()
    rows = []
    for batch in (1, 8):
        for name, options in (
            ("dynamic cache", {}),
            ("static cache", {"cache_implementation": "static"}),
            ("no cache", {"use_cache": False}),
            ("dynamic cache + CFG 3", {"guidance_scale": 3.0}),
        ):
            speed = time_generation(model, batch, args.repeats, **options)
            rows.append({"batch": batch, "mode": name, "image_tokens_per_s": round(speed, 1)})
            print(f"batch {batch:2d}  {name:22s} {speed:8.1f} image tokens/s", flush=True)
    result = {
        "benchmark": "generation_speed",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "config": {"layers": 4, "hidden": 256, "heads": 8, "vocab": 1664, "grid": args.grid, "params": model.num_parameters()},
        "command": "python benchmarks/generation_speed.py",
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
