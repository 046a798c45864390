#!/usr/bin/env python
"""CogView's image-token generation beside transformers' GPT-2 generate at the same dimensions, in one interleaved
run (every variant once per round, median of the rounds), fp32 and bf16, batch 1 and 8.

Both models are random (speed does not depend on the weights): 12 layers x 1024 hidden, 16 heads, 4096 MLP, the
release's vocabulary of 58,240 ids and a 16x16 grid (256 image tokens) after a 10-token prompt. Both sample with
top-k 200 over the 8,192 image ids: CogView through its own rules, GPT-2 through a logits processor that masks every
other id. The weight-read floor is the bytes of weights one step reads divided by this machine's measured copy
bandwidth: what a memory-bound step could do at best."""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM


LAYERS, HIDDEN, HEADS, VOCAB, IMAGE_VOCAB, GRID, PROMPT = 12, 1024, 16, 58240, 8192, 16, 10


class ImageIdsOnly(LogitsProcessor):
    """GPT-2's stand-in for CogView's rules: only the image ids [0, 8192) may be sampled."""

    def __call__(self, input_ids, scores):
        scores[:, IMAGE_VOCAB:] = -float("inf")
        return scores


def cogview_model(dtype: torch.dtype) -> CogViewForCausalLM:
    config = CogViewConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        max_position_embeddings=GRID * GRID + 64, image_grid_size=GRID, hidden_dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return CogViewForCausalLM(config).to(dtype).eval()


def gpt2_model(dtype: torch.dtype) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=LAYERS, n_embd=HIDDEN, n_head=HEADS, vocab_size=VOCAB, n_positions=GRID * GRID + 64)
    return GPT2LMHeadModel(config).to(dtype).eval()


def cogview_prompt(config: CogViewConfig, batch: int) -> torch.LongTensor:
    text = [config.text_token_offset + 100 + i for i in range(PROMPT - 3)]
    row = [config.command_token_id("[ROI1]"), *text, config.command_token_id("[BASE]"), config.command_token_id("[BOI1]")]
    return torch.tensor([row] * batch)


def weight_bytes_per_step(model: torch.nn.Module, head_rows: int) -> int:
    """Weights one decode step reads: every matrix once, the tied head's rows that are computed, no embedding."""
    per_element = next(model.parameters()).element_size()
    total = sum(p.numel() for n, p in model.named_parameters() if "vqvae" not in n and "wte" not in n and "embed_tokens" not in n and "wpe" not in n and "embed_positions" not in n)
    return (total + head_rows * HIDDEN) * per_element


def copy_bandwidth() -> float:
    """Bytes per second of a large tensor copy (read + write counted as the bytes read)."""
    source, target = torch.empty(256 * 2**20, dtype=torch.uint8), torch.empty(256 * 2**20, dtype=torch.uint8)
    target.copy_(source)
    start = time.perf_counter()
    for _ in range(10):
        target.copy_(source)
    return 10 * source.numel() / (time.perf_counter() - start)


def tokens_per_second(generate, batch: int) -> float:
    start = time.perf_counter()
    out = generate()
    seconds = time.perf_counter() - start
    assert out.shape[1] == PROMPT + GRID * GRID, out.shape
    return batch * GRID * GRID / seconds


def variants(dtype: torch.dtype, compile_static: bool):
    """name -> (function of batch returning a generate closure, weight bytes per step)."""
    ours, gpt2 = cogview_model(dtype), gpt2_model(dtype)
    grid = GRID * GRID
    compile_config = CompileConfig(fullgraph=True, dynamic=False)
    compile_config._compile_all_devices = True  # generate compiles by itself only on accelerators

    def ours_generate(batch, **options):
        prompt = cogview_prompt(ours.config, batch)
        return lambda: ours.generate(prompt, do_sample=True, top_k=200, max_new_tokens=grid, **options)

    def gpt2_generate(batch):
        prompt = torch.randint(IMAGE_VOCAB, VOCAB, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
        processors = LogitsProcessorList([ImageIdsOnly()])
        return lambda: gpt2.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=200, max_new_tokens=grid,
            min_new_tokens=grid, logits_processor=processors, pad_token_id=0,
        )  # fmt: skip

    table = {
        "ours (dynamic cache)": (lambda b: ours_generate(b), weight_bytes_per_step(ours, IMAGE_VOCAB)),
        "ours + guidance 3 (dynamic)": (lambda b: ours_generate(b, guidance_scale=3.0), weight_bytes_per_step(ours, IMAGE_VOCAB)),
        "GPT-2 generate": (gpt2_generate, weight_bytes_per_step(gpt2, VOCAB)),
    }
    if compile_static:
        table["ours (static cache, torch.compile)"] = (
            lambda b: ours_generate(b, cache_implementation="static", compile_config=compile_config),
            weight_bytes_per_step(ours, IMAGE_VOCAB),
        )
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true", help="also time the static cache compiled with inductor")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "generation_vs_peers.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    tables = {dtype: variants(dtype, args.compile) for dtype in dtypes}
    closures = {(d, name, b): make(b) for d, table in tables.items() for name, (make, _) in table.items() for b in batches}
    for key, generate in closures.items():  # warm-up (and compilation) outside the timed rounds
        print("warm-up", key[1], key[0], "batch", key[2], flush=True)
        generate()
    speeds: dict = {key: [] for key in closures}
    for round_index in range(args.rounds):
        for key, generate in closures.items():
            speeds[key].append(tokens_per_second(generate, key[2]))
            print(f"round {round_index}: {key[1]:36s} {str(key[0]):15s} b{key[2]} {speeds[key][-1]:7.1f} tok/s", flush=True)

    rows = []
    for (dtype, name, batch), values in speeds.items():
        step_bytes = tables[dtype][name][1]
        floor = batch * bandwidth / step_bytes  # image tokens/s if a step only streamed its weights once
        rows.append({
            "variant": name, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
            "image_tokens_per_s": round(statistics.median(values), 1), "all_rounds": [round(v, 1) for v in values],
            "weight_read_floor_tokens_per_s": round(floor, 1), "fraction_of_floor": round(statistics.median(values) / floor, 2),
        })  # fmt: skip
    gpt2 = {(r["dtype"], r["batch"]): r["image_tokens_per_s"] for r in rows if r["variant"] == "GPT-2 generate"}
    for row in rows:
        row["vs_gpt2"] = round(row["image_tokens_per_s"] / gpt2[(row["dtype"], row["batch"])], 2)
    result = {
        "benchmark": "generation_vs_peers",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "copy_bandwidth_gb_per_s": round(bandwidth / 1e9, 1),
        "dims": {"layers": LAYERS, "hidden": HIDDEN, "heads": HEADS, "vocab": VOCAB, "image_tokens": GRID * GRID, "prompt": PROMPT},
        "command": "python benchmarks/generation_vs_peers.py" + (" --compile" if args.compile else "") + f" --rounds {args.rounds}",
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    for row in rows:
        print(f"| {row['variant']} | {row['dtype']} | {row['batch']} | {row['image_tokens_per_s']} | {row['vs_gpt2']}x | {row['fraction_of_floor']} |")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
