"""The converter on checkpoints the golden data does not cover (other dimensions, both layouts), its errors, and its
streaming: shards, memory, a folder that appears only when complete."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reference_cogview import make_original_checkpoint, make_original_vqvae, reference_logits, reference_vqvae_encode
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig

from conftest import GOLDEN
from cogview_tools.cli.convert import main
from modeling_cogview import CogViewForCausalLM
from modeling_cogview import convert_cogview_checkpoint as converter
from modeling_cogview.convert_cogview_checkpoint import (
    CheckpointError,
    build_model,
    convert,
    convert_transformer_state_dict,
    convert_vqvae_state_dict,
    infer_config,
    infer_vq_config,
    load_transformer_state_dict,
    load_vqvae_state_dict,
    safe_torch_load,
)


REPO = Path(__file__).parent.parent
MB = 1e6


@pytest.mark.parametrize("layout", ["megatron", "sat"])
def test_unseen_dimensions_match_reference(tmp_path, layout):
    layers, hidden, heads, vocab, positions = 3, 48, 6, 58368, 80
    sd = make_original_checkpoint(tmp_path / "ckpt", layout, layers, hidden, heads, vocab, positions, seed=3)
    make_original_vqvae(tmp_path / "vq.pt", channel=12, embed_dim=6, n_embed=8192, num_downsamples=2)
    convert(tmp_path / "ckpt", tmp_path / "out", num_attention_heads=heads if layout == "megatron" else None,
            vqvae_path=tmp_path / "vq.pt", dtype=torch.float32)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, hidden, heads)
    assert (config.vocab_size, config.max_position_embeddings, config.intermediate_size) == (vocab, positions, 4 * hidden)
    assert config.vq_config.num_downsamples == 2 and config.vq_config.hidden_channels == 12

    input_ids = torch.randint(0, 58219, (1, 70), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids).logits
    # the mapping, exactly: against the same math with the per-token PB-relax max
    torch.testing.assert_close(logits, reference_logits(sd, input_ids, heads, per_token_max=True), atol=2e-5, rtol=1e-5)
    # and the release's whole-tensor max differs from it only through eps, far below sampling noise
    release = reference_logits(sd, input_ids, heads)
    assert (logits.log_softmax(-1) - release.log_softmax(-1)).abs().max() < 1e-3


def test_unseen_vqvae_matches_reference(tmp_path):
    sd = make_original_vqvae(tmp_path / "vq.pt", channel=10, embed_dim=5, n_embed=8192, num_downsamples=1)
    make_original_checkpoint(tmp_path / "ckpt", "megatron", 1, 16, 2, 58240, 40)
    convert(tmp_path / "ckpt", tmp_path / "out", num_attention_heads=2, vqvae_path=tmp_path / "vq.pt")
    model = CogViewForCausalLM.from_pretrained(tmp_path / "out")
    # "auto" keeps the transformer's stored fp16; the VQ-VAE stays fp32, also after loading in half precision
    assert model.model.embed_tokens.weight.dtype == torch.float16 and model.vqvae.dtype == torch.float32
    reloaded = CogViewForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float16)
    assert reloaded.vqvae.dtype == torch.float32 and reloaded.model.embed_tokens.weight.dtype == torch.float16
    pixels = torch.randn(2, 3, 24, 16, generator=torch.Generator().manual_seed(0))
    codes = model.vqvae.float().encode(pixels)
    assert codes.shape == (2, 12, 8)
    assert torch.equal(codes, reference_vqvae_encode(sd, pixels))


def test_golden_checkpoint_is_refused_by_a_plain_safe_load_but_not_by_ours():
    path = GOLDEN / "cogview-tiny-megatron" / "142000" / "mp_rank_00_model_states.pt"
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert "module" in safe_torch_load(path)


def test_arbitrary_pickles_are_refused(tmp_path):
    import argparse

    torch.save({"module": {}, "not_allowed": argparse.Namespace(x=1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="safely"):
        safe_torch_load(tmp_path / "bad.pt")


def test_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(CheckpointError, match="not divisible"):
        convert(GOLDEN / "cogview-tiny-megatron", tmp_path / "out", num_attention_heads=5)
    # a VQ-VAE file given as the transformer
    with pytest.raises(CheckpointError, match="not a CogView transformer"):
        convert(GOLDEN / "vqvae-tiny.pt", tmp_path / "out")
    # a checkpoint with a layer tensor missing
    sd = make_original_checkpoint(tmp_path / "ckpt", "megatron", 2, 16, 2, 58240, 40)
    del sd["transformer.layers.1.mlp.dense_4h_to_h.bias"]
    torch.save({"module": sd}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing"):
        convert(tmp_path / "missing.pt", tmp_path / "out", num_attention_heads=2)
    # a codebook of another size than the image vocabulary the embedding leaves room for
    make_original_vqvae(tmp_path / "vq.pt", channel=4, embed_dim=2, n_embed=60000, num_downsamples=1)
    with pytest.raises(CheckpointError, match="need"):
        convert(tmp_path / "missing.pt", tmp_path / "out", num_attention_heads=2, vqvae_path=tmp_path / "vq.pt")


def test_cli(tmp_path, capsys):
    script = [sys.executable, "scripts/convert_cogview_checkpoint.py"]
    ok = subprocess.run(script + ["--checkpoint_path", str(GOLDEN / "cogview-tiny-sat"), "--output_dir", str(tmp_path / "out"),
                                  "--dtype", "bfloat16"], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "2 layers, hidden 64, 4 heads" in ok.stdout and "in 1 file" in ok.stdout
    converted = CogViewForCausalLM.from_pretrained(tmp_path / "out")
    assert converted.model.embed_tokens.weight.dtype == torch.bfloat16
    # the rest in-process (a subprocess costs the imports, ~10 s)
    assert main(["--checkpoint_path", str(tmp_path / "none"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "error: checkpoint path" in capsys.readouterr().err
    assert main(["--checkpoint_path", str(GOLDEN / "cogview-tiny-sat"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "not empty: pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint_path", "c", "--output_dir", "o", "--max_shard_size", "2 parsecs"])
    assert "max_shard_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--vqvae_path" in capsys.readouterr().out


# ---- streaming: the same tensors as the in-memory conversion, sharded as save_pretrained shards ----


def golden_weights_in_memory(dtype: torch.dtype | None) -> CogViewForCausalLM:
    """The golden release checkpoint converted the pre-streaming way: loaded whole, built as a model in RAM."""
    state_dict, _ = load_transformer_state_dict(GOLDEN / "cogview-tiny-megatron")
    vq_state_dict = load_vqvae_state_dict(GOLDEN / "vqvae-tiny.pt")
    config = infer_config(state_dict, 4, infer_vq_config(vq_state_dict))
    weights = {**convert_vqvae_state_dict(vq_state_dict), **convert_transformer_state_dict(state_dict, config)}
    return build_model(config, weights, dtype)


def read_shards(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """file name -> its tensors, for every safetensors file in a folder."""
    shards = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            assert f.metadata() == {"format": "pt"}
            shards[file.name] = {key: f.get_tensor(key) for key in f.keys()}
    return shards


def check_index(folder: Path) -> dict:
    """The index names every tensor of the shards once, in the file that holds it, and their total size."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = read_shards(folder)
    count = len(shards)
    assert sorted(shards) == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert not (folder / "model.safetensors").exists()
    held = [(key, name) for name, tensors in shards.items() for key in tensors]
    assert len(held) == len({key for key, _ in held}) == len(index["weight_map"])  # each key in one file only
    assert dict(held) == index["weight_map"]
    tensors = [t for shard in shards.values() for t in shard.values()]
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors)
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in tensors)
    return index


def test_streamed_folder_is_what_save_pretrained_writes(tmp_path):
    """Same index (file names, weight_map, metadata), same tensors and dtypes, same config as save_pretrained."""
    convert(GOLDEN / "cogview-tiny-megatron", tmp_path / "streamed", num_attention_heads=4, vqvae_path=GOLDEN / "vqvae-tiny.pt",
            dtype=torch.bfloat16, max_shard_size="1MB")  # fmt: skip
    model = golden_weights_in_memory(torch.bfloat16)
    model.save_pretrained(tmp_path / "saved", max_shard_size="1MB")

    index = check_index(tmp_path / "streamed")
    assert len(set(index["weight_map"].values())) >= 3
    assert index == json.loads((tmp_path / "saved" / "model.safetensors.index.json").read_text())
    streamed, saved = read_shards(tmp_path / "streamed"), read_shards(tmp_path / "saved")
    assert streamed.keys() == saved.keys()
    for name, tensors in saved.items():
        assert streamed[name].keys() == tensors.keys()
        for key, tensor in tensors.items():
            assert streamed[name][key].dtype == tensor.dtype and torch.equal(streamed[name][key], tensor), key
    assert "lm_head.weight" not in index["weight_map"]
    assert all(t.dtype == torch.float32 for shard in streamed.values() for k, t in shard.items() if k.startswith("vqvae."))
    assert json.loads((tmp_path / "streamed" / "config.json").read_text()) == json.loads((tmp_path / "saved" / "config.json").read_text())
    assert {p.name for p in (tmp_path / "saved").glob("*.py")} <= {p.name for p in (tmp_path / "streamed").glob("*.py")}


def test_small_model_is_one_file_with_the_release_sampling(tmp_path):
    convert(GOLDEN / "cogview-tiny-sat", tmp_path / "out", dtype=torch.float32)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "model.safetensors.index.json").exists()
    saved = GenerationConfig.from_pretrained(tmp_path / "out")
    model = CogViewForCausalLM.from_pretrained(tmp_path / "out")
    for generation_config in (saved, model.generation_config):
        assert generation_config.do_sample and generation_config.top_k == 200 and generation_config.temperature == 1.0
        assert generation_config.max_new_tokens == model.config.num_image_tokens == 1024
        assert generation_config.pad_token_id == model.config.pad_token_id
    reference = golden_weights_in_memory(torch.float32).state_dict()  # the SAT and release golden files: same weights
    for key, tensor in model.state_dict().items():
        assert torch.equal(reference[key], tensor), key


def test_legacy_pickle_falls_back_to_a_full_load(tmp_path, caplog):
    sd = make_original_checkpoint(tmp_path / "ckpt", "megatron", 1, 16, 2, 58240, 40)
    torch.save({"module": sd}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with caplog.at_level(logging.WARNING, logger=converter.__name__):
        convert(tmp_path / "legacy.pt", tmp_path / "out", num_attention_heads=2)
    assert "legacy (pre-1.6) format, which cannot be memory-mapped" in caplog.text
    convert(tmp_path / "ckpt", tmp_path / "zip", num_attention_heads=2)  # the zip format: mapped, no warning
    assert len(caplog.records) == 1
    legacy, zipped = read_shards(tmp_path / "out"), read_shards(tmp_path / "zip")
    assert all(torch.equal(t, zipped["model.safetensors"][k]) for k, t in legacy["model.safetensors"].items())


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"):
        convert(GOLDEN / "cogview-tiny-sat", tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    convert(GOLDEN / "cogview-tiny-sat", tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "mine.txt").exists() and (tmp_path / "out" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_mid_way_leaves_nothing(tmp_path, monkeypatch):
    written = []

    def fail_on_second_shard(tensors, filename, metadata=None):
        if written:
            raise OSError("disk full")
        written.append(filename)
        return converter.save_file.__wrapped__(tensors, filename, metadata=metadata)

    fail_on_second_shard.__wrapped__ = converter.save_file
    monkeypatch.setattr(converter, "save_file", fail_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        convert(GOLDEN / "cogview-tiny-sat", tmp_path / "out", max_shard_size="1MB")
    assert len(written) == 1 and list(tmp_path.iterdir()) == []  # the temporary folder with its shard is gone


# Runs the converter's CLI in a child that first reports its RssAnon once everything is imported (the fixed cost of
# torch + transformers), and at the end its VmHWM (RSS with file pages: the mapped checkpoint counts there).
MEASURED_CHILD = """
import sys
from cogview_tools.cli.convert import main

def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

print("imported", status("RssAnon"), flush=True)
code = main(sys.argv[1:])
print("VmHWM", status("VmHWM"), flush=True)
sys.exit(code)
"""


def run_sampling_rss_anon(args: list[str], log: Path) -> tuple[int, str]:
    """Run a child, reading its RssAnon from /proc every millisecond from here: a thread inside it would miss the
    peaks, as safetensors holds the GIL while it writes. The kernel keeps no RssAnon peak (VmHWM includes file pages),
    so sampling is the honest measure. Returns the peak and the child's stdout."""
    peak = 0
    with open(log, "w") as stdout:
        child = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT, cwd=REPO, text=True)
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            try:
                peak = max(peak, next(int(line.split()[1]) * 1024 for line in status.open() if line.startswith("RssAnon:")))
            except (OSError, StopIteration, ValueError):  # exiting: no memory map left to read
                pass
            time.sleep(0.001)
    output = log.read_text()
    assert child.returncode == 0, output
    return peak, output


@pytest.fixture(scope="module")
def full_width_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The release's width, vocabulary and positions (2560 hidden, 40 heads, 58240 ids, 1089 positions) at 2 layers:
    0.62 GB of fp16 in the release layout. Every tensor shape of the 3.9B model is in it."""
    directory = tmp_path_factory.mktemp("full-width") / "cogview-2-layers"
    state_dict = make_original_checkpoint(directory, "megatron", 2, 2560, 40, 58240, 1089, seed=5)
    return directory, state_dict


@pytest.mark.slow
def test_full_width_streams_in_shards_within_memory(full_width_checkpoint, tmp_path):
    directory, state_dict = full_width_checkpoint
    checkpoint_size = (directory / "7" / "mp_rank_00_model_states.pt").stat().st_size
    args = ["--checkpoint_path", str(directory), "--output_dir", str(tmp_path / "out"), "--max_shard_size", "200MB"]
    peak, output = run_sampling_rss_anon([sys.executable, "-c", MEASURED_CHILD, *args], tmp_path / "log.txt")
    imported = int(output.split("imported ")[1].split()[0])
    vm_hwm = int(output.split("VmHWM ")[1].split()[0])
    print(f"checkpoint {checkpoint_size / MB:.0f} MB: peak RssAnon {peak / MB:.0f} MB ({imported / MB:.0f} MB of it the "
          f"imports), VmHWM {vm_hwm / MB:.0f} MB")  # fmt: skip
    # the margin is the interpreter with torch and transformers imported, measured in the same child; the in-memory
    # conversion needed twice the checkpoint on top of it
    assert peak <= 0.5 * checkpoint_size + imported + 50 * MB
    assert "2 layers, hidden 2560, 40 heads, vocab 58240" in output

    index = check_index(tmp_path / "out")
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3
    for name in files:  # at most 200 MB, unless one tensor is larger by itself (the embedding, 298 MB)
        keys = [k for k, f in index["weight_map"].items() if f == name]
        assert (tmp_path / "out" / name).stat().st_size <= 200 * MB + 100_000 or len(keys) == 1

    # the same tensors as the in-memory conversion: keys, shapes, dtypes, values
    config = infer_config(state_dict, 40, None)
    reference = build_model(config, convert_transformer_state_dict(state_dict, config), None).state_dict()
    model = CogViewForCausalLM.from_pretrained(tmp_path / "out")
    loaded = model.state_dict()
    assert loaded.keys() == reference.keys() and set(index["weight_map"]) == set(reference) - {"lm_head.weight"}
    for key, tensor in reference.items():
        assert loaded[key].dtype == tensor.dtype == torch.float16 and torch.equal(loaded[key], tensor), key
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


# A conversion that stalls after its first shard, so the test can kill it mid-way.
STALLING_CHILD = """
import sys
import time
from cogview_tools.cli.convert import main
from modeling_cogview import convert_cogview_checkpoint as converter

write_shard = converter.save_file

def write_then_stall(*args, **kwargs):
    write_shard(*args, **kwargs)
    time.sleep(600)

converter.save_file = write_then_stall
sys.exit(main(sys.argv[1:]))
"""


def test_killed_conversion_leaves_no_output(tmp_path):
    output = tmp_path / "out"
    args = ["--checkpoint_path", str(GOLDEN / "cogview-tiny-megatron"), "--num_attention_heads", "4",
            "--output_dir", str(output), "--max_shard_size", "1MB"]  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", STALLING_CHILD, *args], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".tmp-out-*/model-00001-of-*.safetensors")):
            assert child.poll() is None and time.monotonic() < deadline, "the conversion ended before its first shard"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert not output.exists()  # nothing at the output path: no half model that from_pretrained would try
    (leftover,) = tmp_path.glob(".tmp-out-*")  # SIGKILL allows no clean-up: the partial folder is hidden and named so
    assert not (leftover / "config.json").exists() and not (leftover / "model.safetensors.index.json").exists()
