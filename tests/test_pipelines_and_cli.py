"""The ways users reach generation: transformers pipelines, the diffusers pipeline, the command-line scripts."""

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from transformers import pipeline

from conftest import HIDE_PROJECT
from modeling_cogview import CogViewPipeline


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    """A command-line program's module (what `scripts/NAME.py` and its console script run)."""
    return importlib.import_module(f"cogview_tools.cli.{name}")


def arrays(images):
    return [np.asarray(image) for image in images]


def test_text_to_image_pipeline(tiny_model_dir):
    pipe = pipeline("text-to-image", model=str(tiny_model_dir))
    first = pipe("一只可爱的猫", num_images_per_prompt=3, seed=1, progress_bar=False)
    assert len(first) == 3 and all(isinstance(item["image"], PIL.Image.Image) for item in first)
    again = pipe("一只可爱的猫", num_images_per_prompt=3, seed=1, progress_bar=False)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(i["image"] for i in first), arrays(i["image"] for i in again)))
    batch = pipe(["一只可爱的猫", "老虎"], seed=1, progress_bar=False)
    assert len(batch) == 2 and len(batch[0]) == 1
    reranked = pipe("一只可爱的猫", num_images_per_prompt=2, rerank_candidates=3, seed=1, progress_bar=False)
    assert len(reranked) == 2
    state = torch.random.get_rng_state()
    pipe("老虎", seed=5, progress_bar=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded on a fork: the caller's random state is untouched


def test_captioning_pipeline(tiny_model_dir):
    captioner = pipeline("image-to-text", model=str(tiny_model_dir), trust_remote_code=True)
    (result,) = captioner(PIL.Image.new("RGB", (16, 16), "white"), max_new_tokens=5)
    assert isinstance(result["generated_text"], str) and result["generated_text"]


REMOTE_PIPELINE = HIDE_PROJECT + """
from transformers import pipeline
images = pipeline("text-to-image", model=sys.argv[1], trust_remote_code=True)("猫", seed=0, progress_bar=False)
drawn = pipeline("any-to-any", model=sys.argv[1], trust_remote_code=True)(text="猫", generation_mode="image")
assert drawn[0]["generated_image"].size == (16, 16)
print(type(images[0]["image"]).__name__, images[0]["image"].size)
"""


def test_text_to_image_pipeline_as_remote_code(tiny_model_dir, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", REMOTE_PIPELINE, str(tiny_model_dir)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("Image (16, 16)")


def test_diffusers_pipeline_round_trip(tiny_model_dir, tmp_path):
    pipe = CogViewPipeline.from_pretrained(tiny_model_dir)
    out = pipe(["一只可爱的猫", "老虎"], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), progress_bar=False)
    assert len(out.images) == 4 and out.images[0].size == (16, 16)
    same = pipe(["一只可爱的猫", "老虎"], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), progress_bar=False)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(out.images), arrays(same.images)))
    assert pipe("猫", num_images_per_prompt=2, rerank_candidates=4, output_type="pt", progress_bar=False).images.shape == (2, 3, 16, 16)

    pipe.save_pretrained(tmp_path / "saved")
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    again = reloaded(["一只可爱的猫", "老虎"], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), progress_bar=False)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(out.images), arrays(again.images)))


def test_diffusers_conventions_progress_callbacks_and_output_types(tiny_model_dir, capsys):
    """self.progress_bar counts image rows (set_progress_bar_config applies), callback_on_step_end runs once per row
    with the codes so far, output_type "latent" / "pt" / "np" / "pil" as diffusers' pipelines give them."""
    pipe = CogViewPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(desc="rows drawn")
    seen = []
    latent = pipe("猫", num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), output_type="latent",
                  callback_on_step_end=lambda p, step, timestep, kwargs: seen.append((step, tuple(kwargs["latents"].shape)))).images  # fmt: skip
    assert "rows drawn" in capsys.readouterr().err
    assert seen == [(row, (2, 4 * (row + 1))) for row in range(4)]  # 4 rows of 4 codes, both images
    assert latent.shape == (2, 4, 4) and latent.dtype == torch.long
    same = {"generator": torch.Generator().manual_seed(0), "num_images_per_prompt": 2, "progress_bar": False}
    as_pt = pipe("猫", output_type="pt", **same).images
    as_np = pipe("猫", output_type="np", **same).images
    (as_pil,) = pipe("猫", return_dict=False, **same)
    assert as_pt.shape == (2, 3, 16, 16) and as_pt.dtype == torch.float32 and 0 <= float(as_pt.min()) and float(as_pt.max()) <= 1
    assert as_np.shape == (2, 16, 16, 3) and np.allclose(as_np, as_pt.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(np.asarray(as_pil[0]), np.round(as_np[0] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="output_type"):
        pipe("猫", output_type="jpeg")
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe("猫", callback_on_step_end_tensor_inputs=["prompt_embeds"])


def test_generate_cli(tiny_model_dir, tmp_path, capsys):
    generate = load_script("generate")
    (tmp_path / "prompts.txt").write_text("老虎\n\n一只猫\n", encoding="utf-8")
    code = generate.main(["--model", str(tiny_model_dir), "--prompt", "一只可爱的猫", "--prompts_file", str(tmp_path / "prompts.txt"),
                          "--num_images", "3", "--seed", "0", "--output_dir", str(tmp_path / "out"), "--batch_size", "2", "--no_progress",
                          "--candidates", "2"])  # fmt: skip
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(pngs) == 10 and "grid.png" in pngs
    assert PIL.Image.open(tmp_path / "out" / "grid.png").size == (3 * 16, 3 * 16)
    with pytest.raises(SystemExit):
        generate.main(["--model", str(tmp_path / "missing"), "--prompt", "x"])
    assert "model folder not found" in capsys.readouterr().err
    assert generate.main(["--model", str(tiny_model_dir), "--prompt", "猫" * 200, "--output_dir", str(tmp_path / "o2")]) == 2
    assert "shorten it" in capsys.readouterr().err


def test_caption_and_rerank_cli(tiny_model_dir, tmp_path, capsys):
    for i, color in enumerate(["red", "blue"]):
        PIL.Image.new("RGB", (16, 16), color).save(tmp_path / f"{i}.png")
    assert load_script("caption").main(["--model", str(tiny_model_dir), "--image", str(tmp_path / "0.png"), "--num_captions", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(tmp_path / "0.png") + "\t") for line in lines)

    rerank = load_script("rerank")
    assert rerank.main(["--model", str(tiny_model_dir), "--prompt", "一只猫", "--images", str(tmp_path / "0.png"), str(tmp_path / "1.png")]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    scores = [float(score) for score, _ in rows]
    assert len(rows) == 2 and scores == sorted(scores, reverse=True) and scores[0] != scores[1]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert rerank.main(["--model", str(tiny_model_dir), "--prompt", "猫", "--images", str(tmp_path / "broken.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_any_to_any_pipeline_draws_images(tiny_model_dir):
    pipe = pipeline("any-to-any", model=str(tiny_model_dir))
    results = pipe(text="一只可爱的猫", generation_mode="image", generate_kwargs={"num_return_sequences": 2})
    assert len(results) == 2
    assert all(isinstance(r["generated_image"], PIL.Image.Image) and r["generated_image"].size == (16, 16) for r in results)
