import os
import sys
from pathlib import Path

import pytest
import torch

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.convert_cogview_checkpoint import convert
from modeling_cogview.generation_cogview import release_generation_config


FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
sys.path.insert(0, str(Path(__file__).parent))  # tests' own helpers (reference implementation, checkpoint maker)

# Prepended to a subprocess's script: none of the project's modules is importable there, as where it is not installed.
HIDE_PROJECT = """
import sys
for name in ("configuration_cogview", "processing_cogview", "modeling_cogview"):
    sys.modules[name] = None
"""


RUN_SLOW = os.environ.get("RUN_SLOW", "").lower() in ("1", "true", "yes")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process, browser, Hub, install and full-width tests (RUN_SLOW=1 or -m slow runs them)")


def pytest_collection_modifyitems(config, items):
    """transformers' convention: slow tests run with RUN_SLOW=1 (as .ci/run does) or when `-m` names them."""
    if RUN_SLOW or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: RUN_SLOW=1 runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def tiny_config(**overrides) -> CogViewConfig:
    """A model of the same class with other numbers: 64 image codes on a 4x4 grid, 100 text pieces."""
    values = dict(
        vocab_size=200,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=48,
        image_vocab_size=64,
        text_vocab_size=100,
        image_grid_size=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vq_config=dict(in_channels=3, hidden_channels=8, embed_dim=4, num_embeddings=64, num_downsamples=2),
    )
    values.update(overrides)
    return CogViewConfig(**values)


@pytest.fixture
def tiny_model() -> CogViewForCausalLM:
    torch.manual_seed(0)
    return CogViewForCausalLM(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random model (4x4 grid of 64 codes, 16 px images) with CogView's real tokenizer and a processor."""
    from processing_cogview import CogViewProcessor

    output = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = tiny_config(vocab_size=50100, text_vocab_size=50000, max_position_embeddings=64)
    model = CogViewForCausalLM(config)
    model.generation_config = release_generation_config(config)  # a folder samples as the release did
    model.save_pretrained(output)
    CogViewProcessor.from_sentencepiece(GOLDEN / "tokenizer" / "cog-pretrain.model", config).save_pretrained(output)
    return output


@pytest.fixture(scope="session")
def tiny_sr_model_dir(tmp_path_factory) -> Path:
    """A tiny random super-resolution model (draws 4x4 grids of 64 codes, 16 px; reads 2x2, 8 px) with CogView's real
    tokenizer and a processor."""
    from processing_cogview import CogViewProcessor

    output = tmp_path_factory.mktemp("tiny-sr-model")
    torch.manual_seed(0)
    config = tiny_config(vocab_size=50100, text_vocab_size=50000, max_position_embeddings=64, super_resolution=True)
    model = CogViewForCausalLM(config)
    model.generation_config = release_generation_config(config)
    model.save_pretrained(output)
    CogViewProcessor.from_sentencepiece(GOLDEN / "tokenizer" / "cog-pretrain.model", config).save_pretrained(output)
    return output


@pytest.fixture(scope="session")
def golden_model_dir(tmp_path_factory) -> Path:
    """The golden release-layout checkpoint, converted with its VQ-VAE and tokenizer."""
    output = tmp_path_factory.mktemp("golden-converted")
    convert(
        GOLDEN / "cogview-tiny-megatron",
        output,
        num_attention_heads=4,
        vqvae_path=GOLDEN / "vqvae-tiny.pt",
        tokenizer_path=GOLDEN / "tokenizer" / "cog-pretrain.model",
        dtype=torch.float32,
    )
    return output
