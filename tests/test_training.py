"""The training tools on tiny real computation: VQ-VAE training, tokenization (corrupt files, resume), Trainer from
scratch and with LoRA, resuming, and `accelerate launch` with two CPU processes."""

import importlib.util
import json
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
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


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
            "--batch_size", "4", "--shard_size", "7"]  # fmt: skip
    assert script("tokenize_dataset")(args) == 0
    return output, args


def test_tokenize_skips_bad_images_and_resumes(tokenized):
    output, args = tokenized
    summary = json.loads((output / "tokenize_summary.json").read_text())
    assert summary == {"rows": 16, "skipped": 2, "image_tokens": 16}
    data = load_from_disk(output / "dataset")
    assert data.column_names == ["codes", "text_ids", "text", "split"]
    assert all(len(codes) == 16 and max(codes) < 32 for codes in data["codes"])
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=SP_MODEL).encode(data[0]["text"])
    assert data[0]["text_ids"] == [piece + 32 for piece in pieces]  # after the 32 image codes
    # a second run finds every shard done and writes the same data
    shards = sorted(p.name for p in (output / "shards").iterdir())
    assert shards == ["00000", "00001", "00002"]
    (output / "shards" / "00001" / "skipped.json").unlink()  # as if interrupted in shard 1
    assert script("tokenize_dataset")(args) == 0
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


def test_collator_layouts_and_caption_dropout(scratch_run):
    from processing_cogview import CogViewProcessor

    collator_class = script("train").__globals__["CogViewCollator"]
    processor = CogViewProcessor.from_pretrained(scratch_run)
    row = {"codes": list(range(16)), "text_ids": [40, 41, 42]}
    roi, base, boi, eoi = processor.tokenizer.convert_tokens_to_ids(["[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"])
    dropped = collator_class(processor, ["text-to-image"], text_dropout=1.0)([row])
    assert dropped["input_ids"][0].tolist() == [roi, base, boi, *range(16), eoi]  # the unconditional prompt
    both = collator_class(processor, ["text-to-image", "image-to-text"], seed=1)([row] * 8)
    firsts = set(both["input_ids"][:, 0].tolist())
    assert firsts == {roi, base} and torch.equal(both["labels"][both["attention_mask"] == 1], both["input_ids"][both["attention_mask"] == 1])


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
