#!/usr/bin/env python
"""Training-step throughput of CogView beside transformers' GPT-2 of the same size (the nearest architecture:
LayerNorm, GELU MLP, learned positions), in one interleaved run: each round times `--steps` steps of each model
(forward with labels, backward, AdamW step) on the same ids, alternating, and the table reports the median round in
tokens per second. The default size is the bundled digits model's: 4 layers x 256 hidden, 8 heads, 416 ids, 83
positions, batch 32.

    python benchmarks/training_vs_gpt2.py                # writes results/training_vs_gpt2.json
    python benchmarks/training_vs_gpt2.py --label before # the same run on an older checkout, for comparison"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM


def step_timer(model, ids: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def run(steps: int) -> float:
        began = time.perf_counter()
        for _ in range(steps):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - began

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=416)
    parser.add_argument("--length", type=int, default=83)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="current", help="the run's name in the JSON (e.g. before)")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "training_vs_gpt2.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    cogview = CogViewForCausalLM(CogViewConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, max_position_embeddings=args.length, image_vocab_size=256, text_vocab_size=args.vocab - 256 - 32,
        image_grid_size=8, hidden_dropout=0.0, attention_dropout=0.0,
    ))  # fmt: skip
    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=args.vocab, n_embd=args.hidden, n_layer=args.layers, n_head=args.heads, n_positions=args.length,
        n_inner=4 * args.hidden, activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    ))  # fmt: skip
    ids = torch.randint(0, cogview.config.num_real_tokens, (args.batch, args.length))
    timers = {"cogview": step_timer(cogview, ids), "gpt2": step_timer(gpt2, ids)}
    for run in timers.values():
        run(2)  # warm up
    seconds = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, run in timers.items():
            seconds[name].append(run(args.steps))
    tokens = args.batch * args.length * args.steps
    result = {name: round(tokens / statistics.median(values), 1) for name, values in seconds.items()}
    result["ratio"] = round(result["cogview"] / result["gpt2"], 3)
    print(args.label, result)
    output = Path(args.output)
    data = json.loads(output.read_text()) if output.is_file() else {}
    data.update({
        "benchmark": "training_vs_gpt2",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "workload": f"{args.layers} layers x {args.hidden} hidden, {args.heads} heads, {args.vocab} ids, batch {args.batch} x {args.length} tokens; "
                    f"forward with labels, backward, AdamW; median of {args.rounds} interleaved rounds of {args.steps} steps",
        "parameters": {"cogview": cogview.num_parameters(), "gpt2": gpt2.num_parameters()},
        args.label: {"tokens_per_second": {k: result[k] for k in ("cogview", "gpt2")}, "cogview_over_gpt2": result["ratio"]},
    })  # fmt: skip
    output.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
