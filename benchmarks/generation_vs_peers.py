#!/usr/bin/env python
"""CogView's image-token generation beside transformers' GPT-2 generate at the same dimensions, in one interleaved
run (every variant once per round, median of the rounds), fp32 and bf16, batch 1 and 8.

Both models are random (speed does not depend on the weights): 12 layers x 1024 hidden, 16 heads, 4096 MLP, the
release's vocabulary of 58,240 ids and a 16x16 grid (256 image tokens) after a 10-token prompt. Both sample with
top-k 200 over the 8,192 image ids: CogView through its own rules, GPT-2 through a logits processor that masks every
other id. With --compile both also run a static cache under torch.compile (fullgraph), and every row is compared with
GPT-2 run the same way. Guided rows (guidance 3: twice the rows per step) are reported against unguided ones, and one
run also times the default pipeline's work for one image (guidance, best of 16 by self-reranking). The weight-read
floor is the bytes of weights one step reads divided by this machine's measured copy bandwidth: what a memory-bound
step could do at best."""

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

    def gpt2_generate(batch, **options):
        prompt = torch.randint(IMAGE_VOCAB, VOCAB, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
        processors = LogitsProcessorList([ImageIdsOnly()])
        return lambda: gpt2.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=200, max_new_tokens=grid,
            min_new_tokens=grid, logits_processor=processors, pad_token_id=0, **options,
        )  # fmt: skip

    compiled = {"cache_implementation": "static", "compile_config": compile_config}
    table = {
        "ours (dynamic cache)": (lambda b: ours_generate(b), weight_bytes_per_step(ours, IMAGE_VOCAB)),
        "ours + guidance 3 (dynamic cache)": (lambda b: ours_generate(b, guidance_scale=3.0), weight_bytes_per_step(ours, IMAGE_VOCAB)),
        GPT2_EAGER: (gpt2_generate, weight_bytes_per_step(gpt2, VOCAB)),
    }
    if compile_static:
        table["ours (static cache, torch.compile)"] = (lambda b: ours_generate(b, **compiled), weight_bytes_per_step(ours, IMAGE_VOCAB))
        table["ours + guidance 3 (static cache, torch.compile)"] = (
            lambda b: ours_generate(b, guidance_scale=3.0, **compiled),
            weight_bytes_per_step(ours, IMAGE_VOCAB),
        )
        table[GPT2_COMPILED] = (lambda b: gpt2_generate(b, **compiled), weight_bytes_per_step(gpt2, VOCAB))
    return table, ours


GPT2_EAGER, GPT2_COMPILED = "GPT-2 generate", "GPT-2 (static cache, torch.compile)"


def drawing_call(model: CogViewForCausalLM, candidates: int):
    """The default pipeline's work for one image: guidance 3, `candidates` samples, self-reranking keeps one."""
    prompt = cogview_prompt(model.config, 1)
    return lambda: model.generate(prompt, generation_mode="image", guidance_scale=3.0, rerank_candidates=candidates, do_sample=True, top_k=200)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true", help="also time the static cache compiled with inductor (both models)")
    parser.add_argument("--candidates", type=int, default=16, help="samples per image of the timed drawing call (the default pipeline's 16)")
    parser.add_argument("--draw_rounds", type=int, default=1, help="timings of the drawing call (median reported)")
    parser.add_argument("--variants", default=None, help="comma-separated row names to time (default: all)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "generation_vs_peers.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    tables, models = {}, {}
    for dtype in dtypes:
        tables[dtype], models[dtype] = variants(dtype, args.compile)
        if args.variants:  # a side run: only the named rows
            tables[dtype] = {name: row for name, row in tables[dtype].items() if name in args.variants.split(",")}
    closures = {(d, name, b): make(b) for d, table in tables.items() for name, (make, _) in table.items() for b in batches}
    draws = {dtype: drawing_call(model, args.candidates) for dtype, model in models.items()}
    for key, generate in closures.items():  # warm-up (and compilation) outside the timed rounds
        print("warm-up", key[1], key[0], "batch", key[2], flush=True)
        generate()
    speeds: dict = {key: [] for key in closures}
    draw_seconds: dict = {dtype: [] for dtype in draws}
    for round_index in range(args.rounds):
        for key, generate in closures.items():
            speeds[key].append(tokens_per_second(generate, key[2]))
            print(f"round {round_index}: {key[1]:48s} {str(key[0]):15s} b{key[2]} {speeds[key][-1]:7.1f} tok/s", flush=True)
    for _ in range(args.draw_rounds):  # after the rounds: a figure of its own, not a ratio
        for dtype, draw in draws.items():
            start = time.perf_counter()
            assert draw().shape == (1, GRID * GRID)
            draw_seconds[dtype].append(time.perf_counter() - start)
            print(f"one image, guidance 3, best of {args.candidates}, {dtype}: {draw_seconds[dtype][-1]:.1f} s", flush=True)

    rows = []
    for (dtype, name, batch), values in speeds.items():
        step_bytes = tables[dtype][name][1]
        floor = batch * bandwidth / step_bytes  # image tokens/s if a step only streamed its weights once
        rows.append({
            "variant": name, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
            "image_tokens_per_s": round(statistics.median(values), 1), "all_rounds": [round(v, 1) for v in values],
            "weight_read_floor_tokens_per_s": round(floor, 1), "fraction_of_floor": round(statistics.median(values) / floor, 2),
        })  # fmt: skip
    speed = {(r["variant"], r["dtype"], r["batch"]): r["image_tokens_per_s"] for r in rows}
    for row in rows:  # like with like: each row against eager GPT-2 and, where it was timed, compiled GPT-2
        for label, peer in (("vs_gpt2", GPT2_EAGER), ("vs_gpt2_compiled", GPT2_COMPILED)):
            if (peer, row["dtype"], row["batch"]) in speed:
                row[label] = round(row["image_tokens_per_s"] / speed[(peer, row["dtype"], row["batch"])], 2)
    guided_vs_unguided = {}  # at the same batch, and against twice the rows (what a guided step runs)
    for (name, dtype, batch), value in speed.items():
        unguided = name.replace(" + guidance 3", "")
        for label, unguided_batch in (("", batch), (" vs unguided 2x rows (0.5: the rows alone)", 2 * batch)):
            if name.startswith("ours + guidance") and (unguided, dtype, unguided_batch) in speed:
                ratio = value / speed[(unguided, dtype, unguided_batch)]
                guided_vs_unguided[f"{name.removeprefix('ours + guidance 3 ')} {dtype} b{batch}{label}"] = round(ratio, 2)
    drawing = {
        str(dtype).removeprefix("torch."): {"median_s": round(statistics.median(v), 1), "all_rounds": [round(x, 1) for x in v]}
        for dtype, v in draw_seconds.items()
        if v
    }
    result = {
        "benchmark": "generation_vs_peers",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "copy_bandwidth_gb_per_s": round(bandwidth / 1e9, 1),
        "dims": {"layers": LAYERS, "hidden": HIDDEN, "heads": HEADS, "vocab": VOCAB, "image_tokens": GRID * GRID, "prompt": PROMPT},
        "command": "python benchmarks/generation_vs_peers.py" + (" --compile" if args.compile else "") + f" --rounds {args.rounds}"
        + (f" --batches {args.batches} --variants '{args.variants}' --draw_rounds {args.draw_rounds}" if args.variants else ""),
        "results": rows,
        "guided_vs_unguided": guided_vs_unguided,
        "one_image_guided_best_of": {"candidates": args.candidates, "seconds": drawing},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    for row in rows:
        print(f"| {row['variant']} | {row['dtype']} | {row['batch']} | {row['image_tokens_per_s']} | {row.get('vs_gpt2', '-')}x | {row.get('vs_gpt2_compiled', '-')} | {row['fraction_of_floor']} |")
    print("guided / unguided:", guided_vs_unguided)
    print("one image, guided, best of", args.candidates, drawing)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
