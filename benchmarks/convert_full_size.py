#!/usr/bin/env python
"""Converting a checkpoint of the released size: 48 layers x 2560 hidden, 40 heads, 58,240 ids, 1,089 positions,
3.93B parameters, 7.9 GB of fp16 in the release's layout (`ITER/mp_rank_00_model_states.pt` +
`latest_checkpointed_iteration.txt`, torch.save's zip format, with DeepSpeed's extra state). The weights are random:
memory and time do not depend on them.

The checkpoint is built without holding it in RAM: torch.save(skip_data) writes the file's layout, then the file is
memory-mapped shared and filled tensor by tensor. The converter runs in a child whose RssAnon (anonymous memory; the
page cache of the mapped checkpoint does not count) is read from /proc every few ms from outside, since the kernel
keeps no peak of it; VmHWM (peak RSS including file pages) is the child's own. Writes a JSON result and prints a
markdown table row. Needs about twice the checkpoint's size on disk (see --work_dir)."""

import argparse
import builtins
import json
import mmap
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


REPO = Path(__file__).resolve().parent.parent
GB = 1e9
LAYER_NORMS = ("input_layernorm", "third_layernorm", "post_attention_layernorm", "fourth_layernorm")

# The converter's CLI, reporting its RssAnon once imported, its VmHWM and the conversion's seconds at the end.
MEASURED_CHILD = """
import sys
import time
from cogview_tools.cli.convert import main

def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

print("imported", status("RssAnon"), flush=True)
start = time.perf_counter()
code = main(sys.argv[1:])
print("seconds", time.perf_counter() - start, flush=True)
print("VmHWM", status("VmHWM"), flush=True)
sys.exit(code)
"""


def release_shapes(layers: int, hidden: int, vocab: int, positions: int) -> dict[str, tuple[int, ...]]:
    """The release's state dict (COGVIEW.md §4.1), in its order."""
    shapes = {"word_embeddings.weight": (vocab, hidden), "transformer.position_embeddings.weight": (positions, hidden)}
    for i in range(layers):
        p = f"transformer.layers.{i}"
        for norm in LAYER_NORMS:
            shapes[f"{p}.{norm}.weight"] = shapes[f"{p}.{norm}.bias"] = (hidden,)
        shapes[f"{p}.attention.query_key_value.weight"], shapes[f"{p}.attention.query_key_value.bias"] = (3 * hidden, hidden), (3 * hidden,)
        shapes[f"{p}.attention.dense.weight"], shapes[f"{p}.attention.dense.bias"] = (hidden, hidden), (hidden,)
        shapes[f"{p}.mlp.dense_h_to_4h.weight"], shapes[f"{p}.mlp.dense_h_to_4h.bias"] = (4 * hidden, hidden), (4 * hidden,)
        shapes[f"{p}.mlp.dense_4h_to_h.weight"], shapes[f"{p}.mlp.dense_4h_to_h.bias"] = (hidden, 4 * hidden), (hidden,)
    shapes["transformer.final_layernorm.weight"] = shapes["transformer.final_layernorm.bias"] = (hidden,)
    return shapes


def write_release_checkpoint(directory: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> Path:
    """A random fp16 checkpoint in the release layout, built without holding it in RAM: torch.empty reserves (no page
    is touched), torch.save under skip_data writes the zip layout without the bytes, and the file mapped shared is
    then filled one tensor at a time (its pages are the page cache's, written back by the kernel)."""
    model_file = directory / "142000" / "mp_rank_00_model_states.pt"
    model_file.parent.mkdir(parents=True)
    (directory / "latest_checkpointed_iteration.txt").write_text("142000")
    module = {name: torch.empty(shape, dtype=torch.float16) for name, shape in shapes.items()}
    extras = {"iteration": 142000, "np_rng_state": np.random.RandomState(0).get_state(), "csr_tensor_module_names": builtins.set()}
    with torch.serialization.skip_data():
        torch.save({"module": module, **extras}, model_file)
    del module
    generator = torch.Generator().manual_seed(seed)
    with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
        mapped = torch.load(model_file, mmap=True, weights_only=False)["module"]  # our own file
        for name, tensor in mapped.items():
            scale = 0.5 if "embeddings" in name else 0.02
            tensor.normal_(1.0 if "layernorm.weight" in name else 0.0, scale, generator=generator)
        del mapped
    return model_file


def read_status(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):  # exiting: no memory map left to read
        return None


def run_converter(args: list[str], log: Path, interval_s: float) -> dict:
    """The converter's CLI in a child; its RssAnon sampled from here (a thread inside would wait on the GIL, which
    safetensors holds while it writes)."""
    peak_anon, samples = 0, 0
    start = time.perf_counter()
    with open(log, "w") as output:
        child = subprocess.Popen([sys.executable, "-c", MEASURED_CHILD, *args], stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
        while child.poll() is None:
            anon = read_status(child.pid, "RssAnon")
            if anon is not None:
                peak_anon, samples = max(peak_anon, anon), samples + 1
            time.sleep(interval_s)
    wall = time.perf_counter() - start
    text = log.read_text()
    if child.returncode != 0:
        raise SystemExit(f"the converter failed ({child.returncode}):\n{text[-3000:]}")

    def value(word: str) -> float:  # the child's "word number" lines
        return float(text.split(word + " ")[1].split()[0])

    return {
        "peak_rss_anon_bytes": peak_anon,
        "rss_anon_after_imports_bytes": int(value("imported")),
        "vm_hwm_bytes": int(value("VmHWM")),
        "conversion_seconds": round(value("seconds"), 1),
        "child_wall_seconds": round(wall, 1),
        "rss_samples": samples,
        "summary": next(line for line in text.splitlines() if line.startswith("wrote ")),
    }


def spot_check(output_dir: Path, model_file: Path, layers: int, hidden: int):
    """A few converted tensors against the checkpoint's bytes: the split QKV rows of the last layer, the embedding."""
    from safetensors import safe_open

    source = torch.load(model_file, mmap=True, weights_only=False)["module"]
    index = json.loads((output_dir / "model.safetensors.index.json").read_text())["weight_map"]
    last = layers - 1
    qkv = source[f"transformer.layers.{last}.attention.query_key_value.weight"]
    expected = {
        "model.embed_tokens.weight": source["word_embeddings.weight"],
        f"model.layers.{last}.self_attn.k_proj.weight": qkv[hidden : 2 * hidden],
        f"model.layers.{last}.mlp.fc2.bias": source[f"transformer.layers.{last}.mlp.dense_4h_to_h.bias"],
    }
    for key, tensor in expected.items():
        with safe_open(output_dir / index[key], "pt") as f:
            if not torch.equal(f.get_tensor(key), tensor):
                raise SystemExit(f"{key} differs from the checkpoint")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=48, help="48 is the release; fewer to fit a small disk")
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=58240)
    parser.add_argument("--positions", type=int, default=1089)
    parser.add_argument("--max_shard_size", default="2GB", help="passed to the converter")
    parser.add_argument("--dtype", default="auto", help="passed to the converter (auto keeps fp16)")
    parser.add_argument("--work_dir", default=None, help="where the checkpoint and the converted folder go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (checkpoint and converted model)")
    parser.add_argument("--interval_ms", type=float, default=2.0, help="RssAnon sampling period")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "convert_full_size.json"))
    args = parser.parse_args()

    shapes = release_shapes(args.layers, args.hidden, args.vocab, args.positions)
    parameters = sum(int(np.prod(shape)) for shape in shapes.values())
    checkpoint_estimate = 2 * parameters
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="cogview-convert-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work_dir).free
    needed = checkpoint_estimate * (3 if args.dtype == "float32" else 2) + 1 * GB
    if free < needed:
        raise SystemExit(f"{work_dir} has {free / GB:.1f} GB free, {needed / GB:.1f} GB needed: pass a smaller --layers or another --work_dir")
    print(f"{args.layers} layers x {args.hidden}: {parameters / 1e9:.2f}B parameters, {checkpoint_estimate / GB:.2f} GB fp16, in {work_dir}", flush=True)

    try:
        start = time.perf_counter()
        model_file = write_release_checkpoint(work_dir / "cogview-base", shapes, args.seed)
        build_seconds = time.perf_counter() - start
        checkpoint_size = model_file.stat().st_size
        print(f"checkpoint built in {build_seconds:.0f} s: {checkpoint_size / GB:.2f} GB", flush=True)

        output_dir = work_dir / "cogview-base-hf"
        converter_args = ["--checkpoint_path", str(work_dir / "cogview-base"), "--output_dir", str(output_dir), "--num_attention_heads",
                          str(args.heads), "--max_shard_size", args.max_shard_size, "--dtype", args.dtype]  # fmt: skip
        measured = run_converter(converter_args, work_dir / "converter.log", args.interval_ms / 1000)
        measured["summary"] = measured["summary"].replace(str(output_dir), output_dir.name)  # no path of this machine
        shards = [{"name": f.name, "bytes": f.stat().st_size} for f in sorted(output_dir.glob("*.safetensors"))]
        if len(shards) > 1:
            spot_check(output_dir, model_file, args.layers, args.hidden)
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    bound = 0.5 * checkpoint_size + 1.5 * GB
    result = {
        "benchmark": "convert_full_size",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": " ".join(["python benchmarks/convert_full_size.py", *sys.argv[1:]]),
        "checkpoint": dict(
            layers=args.layers, hidden=args.hidden, heads=args.heads, vocab=args.vocab, positions=args.positions,
            parameters=parameters, bytes=checkpoint_size, build_seconds=round(build_seconds, 1),
        ),
        "max_shard_size": args.max_shard_size,
        "dtype": args.dtype,
        **measured,
        "shards": shards,
        "rss_anon_bound_bytes": int(bound),
        "within_bound": measured["peak_rss_anon_bytes"] <= bound,
    }
    print(json.dumps(result, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print("| layers | checkpoint | shards | seconds | peak RssAnon | VmHWM | bound (0.5 x ckpt + 1.5 GB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.layers} | {checkpoint_size / GB:.2f} GB | {len(shards)} | {measured['conversion_seconds']:.0f} | "
        f"{measured['peak_rss_anon_bytes'] / GB:.2f} GB | {measured['vm_hwm_bytes'] / GB:.2f} GB | {bound / GB:.2f} GB |"
    )


if __name__ == "__main__":
    main()
