"""The converter on checkpoints the golden data does not cover (other dimensions, both layouts), and its errors."""

import subprocess
import sys

import pytest
import torch
from reference_cogview import make_original_checkpoint, make_original_vqvae, reference_logits, reference_vqvae_encode
from transformers import AutoModelForCausalLM

from conftest import GOLDEN
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.convert_cogview_checkpoint import CheckpointError, convert, safe_torch_load


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
    model = convert(tmp_path / "ckpt", tmp_path / "out", num_attention_heads=2, vqvae_path=tmp_path / "vq.pt")
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


def test_cli(tmp_path):
    script = [sys.executable, "scripts/convert_cogview_checkpoint.py"]
    ok = subprocess.run(script + ["--checkpoint_path", str(GOLDEN / "cogview-tiny-sat"), "--output_dir", str(tmp_path / "out"),
                                  "--dtype", "bfloat16"], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "2 layers, hidden 64, 4 heads" in ok.stdout
    converted = CogViewForCausalLM.from_pretrained(tmp_path / "out")
    assert converted.model.embed_tokens.weight.dtype == torch.bfloat16
    bad = subprocess.run(script + ["--checkpoint_path", str(tmp_path / "none"), "--output_dir", str(tmp_path / "o")], capture_output=True, text=True)
    assert bad.returncode == 2 and "error: checkpoint path" in bad.stderr and "Traceback" not in bad.stderr
    assert "--vqvae_path" in subprocess.run(script + ["--help"], capture_output=True, text=True).stdout
