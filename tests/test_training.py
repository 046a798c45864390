"""The training tools on tiny real computation: VQ-VAE training, tokenization (corrupt files, resume), Trainer from
scratch and with LoRA, resuming, and `accelerate launch` with two CPU processes."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import load_from_disk

from conftest import GOLDEN
from modeling_cogview import CogViewForCausalLM, CogViewVQVAE


ROOT = Path(__file__).resolve().parent.parent
SP_MODEL = str(GOLDEN / "tokenizer" / "cog-pretrain.model")


def script(name):
    """The `main` of a command-line program (what `scripts/NAME.py` and its console script run)."""
    return importlib.import_module(f"cogview_tools.cli.{name}").main


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """16 small real-looking images (strokes on black) with captions, one corrupt file and one odd (empty) image."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        canvas = np.zeros((20, 20), np.uint8)
        canvas[rng.integers(2, 8) : rng.integers(12, 18), rng.integers(4, 10) : rng.integers(11, 16)] = 255
        PIL.Image.fromarray(canvas, "L").save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"一只猫 {i % 3}", "split": "train"})
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.png").write_bytes(b"")
    rows += [{"file_name": "broken.png", "text": "坏", "split": "train"}, {"file_name": "empty.png", "text": "空", "split": "train"}]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    return folder


@pytest.fixture(scope="module")
def vqvae_dir(image_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("vqvae")
    assert script("train_vqvae")([
        "--images_dir", str(image_folder), "--output_dir", str(output), "--image_size", "16", "--num_downsamples", "2",
        "--hidden_channels", "8", "--embed_dim", "4", "--num_embeddings", "32", "--steps", "200", "--batch_size", "8",
        "--learning_rate", "1e-2",
        "--restart_every", "50",
    ]) == 0  # fmt: skip
    return output


def test_vqvae_training_reports_and_loads(vqvae_dir):
    metrics = json.loads((vqvae_dir / "vqvae_metrics.json").read_text())
    assert metrics["codebook_size"] == 32 and 1 <= metrics["codes_used"] <= 32
    assert metrics["reconstruction_mse"] < 0.8 * metrics["initial_reconstruction_mse"]
    vqvae = CogViewVQVAE.from_pretrained(vqvae_dir)
    assert vqvae.encode(torch.zeros(1, 3, 16, 16)).shape == (1, 4, 4)


@pytest.fixture(scope="module")
def tokenized(image_folder, vqvae_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("tokenized")
    args = ["--images_dir", str(image_folder), "--vqvae", str(vqvae_dir), "--tokenizer", SP_MODEL, "--output_dir", str(output),
            "--batch_size", "4", "--num_proc", "2"]  # fmt: skip
    assert script("tokenize_dataset")(args) == 0
    return output, args


def test_tokenize_skips_bad_images_and_a_rerun_redoes_only_unfinished_parts(tokenized, caplog):
    output, args = tokenized
    summary = json.loads((output / "tokenize_summary.json").read_text())
    assert summary == {"rows": 16, "skipped": 2, "image_tokens": 16}
    data = load_from_disk(output / "dataset")
    assert sorted(data.column_names) == ["codes", "split", "text", "text_ids"]
    assert all(len(codes) == 16 and max(codes) < 32 for codes in data["codes"])
    assert data["text"] == [f"一只猫 {i % 3}" for i in range(16)]  # the metadata's order, the bad images left out
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=SP_MODEL).encode(data[0]["text"])
    assert data[0]["text_ids"] == [piece + 32 for piece in pieces]  # after the 32 image codes
    # each process kept its finished part; a rerun after losing one part redoes that part only
    parts = sorted((output / "cache").glob("tokenized-*_*_of_00002.arrow"))
    assert len(parts) == 2
    parts[1].unlink()  # as if interrupted before the second process finished
    with caplog.at_level("INFO", logger="datasets"):
        assert script("tokenize_dataset")(args) == 0
    assert "Reprocessing 1/2 shards" in caplog.text
    again = load_from_disk(output / "dataset")
    assert again["codes"] == data["codes"] and again["text_ids"] == data["text_ids"]
    assert json.loads((output / "tokenize_summary.json").read_text())["skipped"] == 2


def log_losses(run_dir: Path) -> list[float]:
    state = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1] / "trainer_state.json"
    return [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


TINY = ["--num_layers", "1", "--hidden_size", "32", "--num_heads", "2", "--per_device_train_batch_size", "8", "--logging_steps", "5"]


@pytest.fixture(scope="module")
def scratch_run(tokenized, vqvae_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("scratch")
    assert script("train")(["--dataset", str(tokenized[0] / "dataset"), "--vqvae", str(vqvae_dir), "--tokenizer", SP_MODEL,
                            "--output_dir", str(output), "--max_steps", "40", "--save_steps", "40", "--learning_rate", "3e-3",
                            "--gen_top_k", "7", "--gen_rerank_candidates", "3", *TINY]) == 0  # fmt: skip
    return output


def test_training_from_scratch_lowers_the_loss_and_writes_a_usable_folder(scratch_run):
    losses = log_losses(scratch_run)
    assert losses[-1] < 0.8 * losses[0], losses
    model = CogViewForCausalLM.from_pretrained(scratch_run)
    assert model.generation_config.top_k == 7 and model.generation_config.rerank_candidates == 3
    card = (scratch_run / "README.md").read_text()
    assert "pipeline_tag: text-to-image" in card and "1 x 32 x 2" in card
    from transformers import pipeline

    images = pipeline("text-to-image", model=str(scratch_run))("一只猫", progress_bar=False)
    assert images[0]["image"].size == (16, 16)


def test_lora_trains_saves_loads_and_merges(scratch_run, tokenized, tmp_path):
    from peft import PeftModel

    assert script("train")(["--dataset", str(tokenized[0] / "dataset"), "--model", str(scratch_run), "--output_dir", str(tmp_path / "lora"),
                            "--lora_r", "4", "--max_steps", "30", "--save_steps", "30", "--learning_rate", "1e-2", *TINY]) == 0  # fmt: skip
    assert (tmp_path / "lora" / "adapter_config.json").is_file() and (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    losses = log_losses(tmp_path / "lora")
    assert losses[-1] < losses[0], losses

    from processing_cogview import CogViewProcessor

    ids = CogViewProcessor.from_pretrained(scratch_run)(text="一只猫")["input_ids"]
    base = CogViewForCausalLM.from_pretrained(scratch_run).eval()
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
        with_adapter = adapted(ids).logits
        merged = adapted.merge_and_unload()(ids).logits
    assert (with_adapter - before).abs().max() > 1e-4  # the adapter changed something
    torch.testing.assert_close(merged, with_adapter, atol=1e-5, rtol=1e-5)

    assert script("train")(["--dataset", str(tokenized[0] / "dataset"), "--model", str(scratch_run), "--output_dir", str(tmp_path / "merged"),
                            "--lora_r", "4", "--merge_lora", "--max_steps", "2", *TINY]) == 0  # fmt: skip
    merged_model = CogViewForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged_model.named_parameters())


def test_training_resumes_from_its_last_checkpoint(tokenized, vqvae_dir, tmp_path, capsys):
    args = ["--dataset", str(tokenized[0] / "dataset"), "--vqvae", str(vqvae_dir), "--tokenizer", SP_MODEL,
            "--output_dir", str(tmp_path / "run"), "--save_steps", "5", *TINY]  # fmt: skip
    assert script("train")(args + ["--max_steps", "10"]) == 0
    assert script("train")(args + ["--max_steps", "15"]) == 0
    assert "resuming from" in capsys.readouterr().out and (tmp_path / "run" / "checkpoint-15").is_dir()
    state = json.loads((tmp_path / "run" / "checkpoint-15" / "trainer_state.json").read_text())
    assert state["global_step"] == 15 and [e["step"] for e in state["log_history"] if "loss" in e] == [5, 10, 15]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model.safetensors")


@pytest.mark.slow
def test_a_run_killed_mid_way_and_resumed_ends_with_the_straight_runs_weights(tokenized, vqvae_dir, tmp_path):
    """Task mixing and caption dropout on, several epochs: SIGKILL after the second checkpoint, then the same command
    again, ends exactly where the uninterrupted run ends."""
    def command(output: Path) -> list[str]:
        return [sys.executable, "-m", "cogview_tools.cli.train", "--dataset", str(tokenized[0] / "dataset"), "--vqvae",
                str(vqvae_dir), "--tokenizer", SP_MODEL, "--output_dir", str(output), "--tasks", "text-to-image,image-to-text",
                "--text_dropout", "0.2", "--max_steps", "14", "--save_steps", "4", "--save_total_limit", "5",
                "--learning_rate", "3e-3", *TINY]  # fmt: skip

    straight = subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = subprocess.Popen(command(tmp_path / "resumed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = tmp_path / "resumed" / "checkpoint-8" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not second.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert second.is_file() and not (tmp_path / "resumed" / "model.safetensors").exists()  # killed mid-way
    resumed = subprocess.run(command(tmp_path / "resumed"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    expected, got = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_collator_layouts_caption_dropout_and_draws_that_a_resume_repeats(scratch_run):
    from cogview_tools.training import DataCollatorForCogView
    from processing_cogview import CogViewProcessor

    processor = CogViewProcessor.from_pretrained(scratch_run)
    rows = [{"codes": [(i * 7 + j) % 32 for j in range(16)], "text_ids": [40 + i % 5, 41, 42]} for i in range(40)]
    roi, base, boi, eoi = processor.tokenizer.convert_tokens_to_ids(["[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"])
    dropped = DataCollatorForCogView(processor, ["text-to-image"], text_dropout=1.0)(rows[:1])
    assert dropped["input_ids"][0].tolist() == [roi, base, boi, *rows[0]["codes"], eoi]  # the unconditional prompt
    tasks = ["text-to-image", "image-to-text"]
    collator = DataCollatorForCogView(processor, tasks, text_dropout=0.3, seed=1)
    both = collator(rows)
    firsts = both["input_ids"][:, 0].tolist()
    mask = both["attention_mask"] == 1
    assert set(firsts) == {roi, base} and torch.equal(both["labels"][mask], both["input_ids"][mask])
    assert 0 < sum(ids[1] == base for ids in both["input_ids"].tolist()) < firsts.count(roi)  # some captions dropped
    # a row's draws depend on the seed, the epoch and the row only: not on its neighbours or on what came before
    reversed_batch = DataCollatorForCogView(processor, tasks, text_dropout=0.3, seed=1)(rows[::-1])["input_ids"]
    assert torch.equal(reversed_batch, both["input_ids"].flip(0))
    collator.set_epoch(1)
    assert not torch.equal(collator(rows)["input_ids"], both["input_ids"])  # another epoch draws anew
    with pytest.raises(ValueError, match="tasks"):
        DataCollatorForCogView(processor, ["inpainting"])


@pytest.mark.parametrize("shell_script", ["train_digits.sh", "train_digits_lora.sh"])
def test_the_training_scripts_commands_still_parse(shell_script):
    """The bundled models' recipes call the programs with the flags they had: every one still parses."""
    import shlex

    text = (ROOT / "scripts" / shell_script).read_text().replace("\\\n", " ")
    commands = [shlex.split(line.replace('"$work"', "data").replace('"$base"', "models/cogview-digits").replace("$base", "models/cogview-digits"))
                for line in text.splitlines() if line.startswith("python scripts/")]  # fmt: skip
    assert any(command[1] == "scripts/train.py" for command in commands)
    for command in commands:
        module = importlib.import_module(f"cogview_tools.cli.{Path(command[1]).stem}")
        if hasattr(module, "parse_args"):
            module.parse_args(command[2:])


def test_prepare_digits_writes_both_sources_with_a_held_out_split_and_augmented_copies(tmp_path):
    import sentencepiece

    script("prepare_digits")(["--source", "sklearn", "--test_per_class", "3", "--output_dir", str(tmp_path / "sk")])
    rows = [json.loads(line) for line in (tmp_path / "sk" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * 1797 and sum(r["split"] == "test" for r in rows) == 2 * 30
    blocky = np.asarray(PIL.Image.open(tmp_path / "sk" / rows[0]["file_name"]))
    assert blocky.shape == (32, 32) and np.array_equal(blocky, blocky[::4, ::4].repeat(4, 0).repeat(4, 1))  # 4x4 blocks
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "sk" / "tokenizer.model"))
    assert pieces.encode("a handwritten digit 7", out_type=str) == ["▁a", "▁handwritten", "▁digit", "▁", "7"]

    script("prepare_digits")(["--augment_copies", "1", "--test_per_class", "50", "--output_dir", str(tmp_path / "mnist")])
    rows = [json.loads(line) for line in (tmp_path / "mnist" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    copies = [r for r in rows if r["file_name"].startswith("augmented/")]
    assert len(copies) == 2 * 4500 and all(r["split"] == "train" for r in copies)  # held-out digits are never augmented
    original = np.asarray(PIL.Image.open(tmp_path / "mnist" / "images" / (copies[0]["file_name"][10:15] + ".png")), np.float32)
    copy = np.asarray(PIL.Image.open(tmp_path / "mnist" / copies[0]["file_name"]), np.float32)
    assert copy.shape == (28, 28) and np.abs(copy - original).mean() > 0  # moved
    assert 0.6 < copy.sum() / original.sum() < 1.4  # about the same ink: a digit scaled by 0.9-1.1, not lost or doubled


def test_super_resolution_tasks_and_models_must_fit(tokenized, scratch_run, capsys):
    """SR tasks need an SR model and data with the extra sizes; an SR model trains on SR tasks only: said before training."""
    base = ["--dataset", str(tokenized[0] / "dataset"), "--model", str(scratch_run), "--output_dir", str(scratch_run.parent / "sr-run"),
            "--max_steps", "1", *TINY]  # fmt: skip
    with pytest.raises(SystemExit, match="add --super_resolution"):
        script("train")([*base, "--tasks", "magnify"])
    with pytest.raises(SystemExit, match="cogview-tokenize --super_resolution"):
        script("train")([*base, "--tasks", "magnify", "--super_resolution"])
    with pytest.raises(SystemExit, match="trains on --tasks super-resolution"):
        script("train")([*base, "--super_resolution"])
