"""The converted golden checkpoints reproduce what the original CogView code computes (fp32, CPU)."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import GOLDEN
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.convert_cogview_checkpoint import convert


CASES = ["t2i_full", "t2i_short", "caption_short", "batch2"]
MEAN = torch.tensor([0.79093, 0.76271, 0.75340]).view(1, 3, 1, 1)
STD = torch.tensor([0.30379, 0.32279, 0.32800]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def golden_cases():
    return load_file(GOLDEN / "transformer_cases.safetensors")


@pytest.fixture(scope="module", params=["cogview-tiny-megatron", "cogview-tiny-sat"])
def converted(request, tmp_path_factory):
    output = tmp_path_factory.mktemp(request.param)
    # the SAT layout carries its head count in model_config.json; the release layout needs the flag
    heads = 4 if request.param.endswith("megatron") else None
    convert(GOLDEN / request.param, output, num_attention_heads=heads, vqvae_path=GOLDEN / "vqvae-tiny.pt", dtype=torch.float32)
    return CogViewForCausalLM.from_pretrained(output).eval()


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
def test_transformer_matches_original(converted, golden_cases, case, attn_implementation):
    converted.set_attn_implementation(attn_implementation)
    input_ids = golden_cases[f"{case}.input_ids"]
    with torch.no_grad():
        logits = converted(input_ids).logits
    label_logprobs = logits.log_softmax(-1)[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(label_logprobs, golden_cases[f"{case}.label_logprobs"], atol=2e-5, rtol=0)
    torch.testing.assert_close(logits[:, -1], golden_cases[f"{case}.last_logits"], atol=2e-5, rtol=0)
    subset = logits[..., golden_cases["vocab_subset"]]
    torch.testing.assert_close(subset, golden_cases[f"{case}.logits_subset"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("size", ["256", "128"])
def test_vqvae_matches_original(converted, size):
    cases = load_file(GOLDEN / "vqvae_cases.safetensors")
    codes = converted.vqvae.encode(cases[f"{size}.pixel_values"])
    assert torch.equal(codes, cases[f"{size}.codes"])
    with torch.no_grad():
        decoded = converted.vqvae.decode(cases[f"{size}.codes"]) * STD + MEAN
    torch.testing.assert_close(decoded, cases[f"{size}.decoded"], atol=1e-4, rtol=0)


def test_plain_layernorm_would_miss(golden_cases, converted):
    """The PB-relax LayerNorm is what makes the match: an ordinary LayerNorm misses the tolerance."""
    input_ids = golden_cases["t2i_short.input_ids"]
    from modeling_cogview.modeling_cogview import CogViewLayerNorm

    original_forward = CogViewLayerNorm.forward
    CogViewLayerNorm.forward = torch.nn.LayerNorm.forward
    try:
        with torch.no_grad():
            logits = converted(input_ids).logits
    finally:
        CogViewLayerNorm.forward = original_forward
    assert (logits[:, -1] - golden_cases["t2i_short.last_logits"]).abs().max() > 2e-5
