"""The transformer's contracts on a tiny config: batching, caches, attention backends, training, serialisation."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, StaticCache
from transformers.testing_utils import CaptureLogger

from configuration_cogview import CogViewConfig
from conftest import tiny_config
from modeling_cogview import CogViewForCausalLM, CogViewModel


def random_ids(batch, length, config, seed=0):
    return torch.randint(0, config.num_real_tokens, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_auto_classes_are_registered(tiny_model):
    config = tiny_model.config
    assert isinstance(AutoConfig.for_model("cogview"), CogViewConfig)
    assert type(AutoModel.from_config(config)) is CogViewModel
    assert type(AutoModelForCausalLM.from_config(config)) is CogViewForCausalLM


def test_vocabulary_layout_comes_from_config():
    config = tiny_config()
    assert config.text_token_offset == 64 and config.command_token_offset == 164
    assert config.command_token_id("[BOI1]") == 165 and config.pad_token_id == 164
    release = CogViewConfig()
    assert release.command_token_id("[BOI1]") == 58193 and release.command_token_id("[POS8]") == 58218
    with pytest.raises(ValueError, match="command tokens"):
        tiny_config(vocab_size=150)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(num_attention_heads=5)


def test_sample_does_not_depend_on_its_batch_neighbours(tiny_model):
    ids = random_ids(3, 20, tiny_model.config)
    with torch.no_grad():
        batched = tiny_model(ids).logits
        alone = torch.cat([tiny_model(ids[i : i + 1]).logits for i in range(3)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_left_padding_gives_the_unpadded_logits(tiny_model):
    config = tiny_model.config
    short, long = random_ids(1, 7, config, 1), random_ids(1, 12, config, 2)
    padded = torch.cat([torch.full((1, 5), config.pad_token_id), short], dim=1)
    mask = torch.tensor([[0] * 5 + [1] * 7, [1] * 12])
    with torch.no_grad():
        batch = tiny_model(torch.cat([padded, long]), attention_mask=mask).logits
        torch.testing.assert_close(batch[0, 5:], tiny_model(short).logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch[1], tiny_model(long).logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_incremental_decoding_equals_full_forward(tiny_model, cache_kind):
    config = tiny_model.config
    ids = random_ids(2, 16, config)
    with torch.no_grad():
        full = tiny_model(ids).logits
        cache = DynamicCache(config=config) if cache_kind == "dynamic" else StaticCache(config=config, max_cache_len=16)
        steps = [tiny_model(ids[:, :6], cache=cache, use_cache=True).logits]
        for t in range(6, 16):
            steps.append(tiny_model(ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_static_cache_generation_equals_dynamic(tiny_model):
    ids = random_ids(2, 5, tiny_model.config)
    common = dict(do_sample=False, max_new_tokens=8, logits_processor=None)
    dynamic = tiny_model.generate(ids, **common)
    static = tiny_model.generate(ids, cache_implementation="static", **common)
    assert torch.equal(dynamic, static)


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_attention_backends_agree_with_eager(implementation):
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config()).eval()
    ids = random_ids(2, 18, model.config)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(ids, attention_mask=mask).logits
        model.set_attn_implementation(implementation)
        other = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(other[0, 4:], eager[0, 4:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other[1], eager[1], atol=1e-5, rtol=1e-4)


def test_pb_relax_is_an_attention_implementation_and_an_identity_in_fp32(tmp_path):
    from transformers.utils import logging as transformers_logging

    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config(pb_relax_alpha=32)).eval()
    model.set_attn_implementation("pb_relax")
    ids = random_ids(2, 18, model.config)
    with torch.no_grad():
        relaxed = model(ids).logits
        model.set_attn_implementation("sdpa")
        plain = model(ids).logits
    torch.testing.assert_close(relaxed, plain, atol=1e-5, rtol=1e-4)
    model.save_pretrained(tmp_path)
    loaded = CogViewForCausalLM.from_pretrained(tmp_path, attn_implementation="pb_relax")
    assert loaded.config._attn_implementation == "pb_relax"
    # a config that asks for PB-relax under a kernel that cannot do it says so, once
    import logging

    logging.Logger.warning_once.cache_clear()  # transformers' once-only warnings remember what earlier tests said
    logger = transformers_logging.get_logger("modeling_cogview.modeling_cogview")
    with CaptureLogger(logger) as captured, torch.no_grad():
        model(ids)
        model(ids)
    assert captured.out.count('load with attn_implementation="pb_relax"') == 1, captured.out


@pytest.mark.parametrize("alpha, finite", [(32, True), (None, False)])
def test_fp16_large_activations_with_and_without_pb_relax(alpha, finite):
    """Q.K of 300-sized activations is 1.4e6, past fp16's 65504: PB-relax attention keeps it finite."""
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config(pb_relax_alpha=alpha)).eval()
    model.set_attn_implementation("pb_relax" if alpha else "eager")
    for layer in model.model.layers:
        layer.self_attn.q_proj.bias.data.fill_(300.0)
        layer.self_attn.k_proj.bias.data.fill_(300.0)
    model.half()
    with torch.no_grad():
        logits = model(random_ids(1, 10, model.config)).logits
    assert bool(torch.isfinite(logits).all()) is finite


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config()).train()
    ids = random_ids(2, 12, model.config)

    def gradients():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # the Trainer's path
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)
    assert not any(n.startswith("vqvae.") for n in plain)  # the VQ-VAE is frozen


def test_loss_weighs_text_positions():
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config()).eval()
    config = model.config
    ids = torch.tensor([[config.command_token_id("[ROI1]"), 70, 71, config.command_token_id("[BASE]"),
                         config.command_token_id("[BOI1]"), 3, 9, 12]])  # fmt: skip
    with torch.no_grad():
        logits = model(ids).logits
        token_loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
        assert torch.allclose(model(ids, labels=ids).loss, token_loss.mean())
        model.config.txt_loss_scale = 5.0
        weights = torch.tensor([5.0, 5, 5, 5, 5, 1, 1])  # by the INPUT token: text and command inputs weigh 5
        assert torch.allclose(model(ids, labels=ids).loss, (token_loss * weights).sum() / weights.sum())
        labels = ids.clone()
        labels[0, -2:] = -100
        expected = (token_loss[:-2] * weights[:-2]).sum() / weights[:-2].sum()
        assert torch.allclose(model(ids, labels=labels).loss, expected)


def test_bad_inputs_are_refused(tiny_model):
    config = tiny_model.config
    with pytest.raises(ValueError, match="must lie in"):
        tiny_model(torch.tensor([[1, config.vocab_size]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tiny_model(random_ids(1, config.max_position_embeddings + 1, config))


def test_save_load_round_trip_keeps_outputs_and_tied_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in stored  # tied: stored once
    reloaded = CogViewForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    ids = random_ids(2, 10, tiny_model.config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, tiny_model(ids).logits, atol=0, rtol=0)
    pixels = torch.randn(1, 3, 16, 16)
    assert torch.equal(reloaded.get_image_tokens(pixels), tiny_model.get_image_tokens(pixels))


def test_the_base_model_holds_the_vqvae_and_folders_keep_their_weight_names(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    vq_names = sorted(k for k in stored if "vqvae" in k)
    assert vq_names and all(k.startswith("vqvae.") for k in vq_names)  # the names every saved folder has
    assert dict(tiny_model.named_modules())["model.vqvae"] is tiny_model.vqvae
    base = AutoModel.from_pretrained(tmp_path).eval()  # its VQ-VAE loaded from the same names
    assert type(base) is CogViewModel
    for name, tensor in base.vqvae.state_dict().items():
        assert torch.equal(tensor, stored[f"vqvae.{name}"]), name
    assert not any(p.requires_grad for p in base.vqvae.parameters())  # frozen after loading, as in the head
    config = tiny_model.config
    mask = config.command_token_id("[MASK]")
    ids = torch.tensor([[config.command_token_id("[ROI1]"), config.text_token_offset + 5, config.command_token_id("[BASE]"),
                         config.command_token_id("[BOI1]"), *[mask] * config.num_image_tokens]])  # fmt: skip
    pixels = torch.randn(1, 3, 16, 16)
    codes = tiny_model.get_image_tokens(pixels)
    filled = ids.clone()
    filled[0, 4:] = codes[0]
    with torch.no_grad():
        from_pixels = base(input_ids=ids, pixel_values=pixels).last_hidden_state
        from_codes = tiny_model.model(input_ids=filled).last_hidden_state
    torch.testing.assert_close(from_pixels, from_codes, atol=0, rtol=0)
    with pytest.raises(ValueError, match="no pixel_values"):
        base(input_ids=ids)
    reloaded = CogViewForCausalLM.from_pretrained(tmp_path)  # and back into the head, through the renaming
    for name, tensor in reloaded.vqvae.state_dict().items():
        assert torch.equal(tensor, stored[f"vqvae.{name}"]), name
    fresh = CogViewForCausalLM(tiny_config())  # a raw state dict, as Trainer's resume loads one
    result = fresh.load_state_dict(stored, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == {"lm_head.weight"}  # tied, stored once
    for name, tensor in fresh.vqvae.state_dict().items():
        assert torch.equal(tensor, stored[f"vqvae.{name}"]), name


def test_tied_weights_survive_resize(tiny_model, tmp_path):
    tiny_model.resize_token_embeddings(256)
    assert tiny_model.lm_head.weight.shape[0] == 256
    assert tiny_model.lm_head.weight.data_ptr() == tiny_model.model.embed_tokens.weight.data_ptr()
    tiny_model.save_pretrained(tmp_path)
    reloaded = CogViewForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.vocab_size == 256
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()


def test_meta_device_init_and_missing_weights_are_initialised(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    dropped = ["model.layers.1.post_feedforward_layernorm.weight", "model.layers.0.mlp.fc2.weight", "model.embed_positions.weight"]
    save_file({k: v for k, v in stored.items() if k not in dropped}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = CogViewForCausalLM.from_pretrained(tmp_path)  # loads through the meta device
    params = dict(reloaded.named_parameters())
    assert torch.equal(params[dropped[0]], torch.ones(32))
    fc2_std = params[dropped[1]].std().item()
    assert 0.5 * 0.01 < fc2_std < 1.5 * 0.01  # 0.02 / sqrt(2 * 2 layers)
    assert 0.5 * 0.02 < params[dropped[2]].std().item() < 1.5 * 0.02
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
    with torch.device("meta"):
        on_meta = CogViewForCausalLM(tiny_config())
    assert all(p.device.type == "meta" for p in on_meta.parameters())


def test_vqvae_round_trip_shapes_and_errors(tiny_model):
    pixels = torch.randn(2, 3, 16, 12)
    codes = tiny_model.vqvae.encode(pixels)
    assert codes.shape == (2, 4, 3) and codes.dtype == torch.long
    assert tiny_model.decode_image_tokens(codes).shape == (2, 3, 16, 12)
    square = tiny_model.get_image_tokens(pixels[:, :, :12])  # [B, 9] ids: a 3x3 grid
    assert square.shape == (2, 9) and tiny_model.decode_image_tokens(square).shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny_model.vqvae.encode(torch.randn(1, 3, 10, 16))
    with pytest.raises(ValueError, match=r"\[batch, 3"):
        tiny_model.vqvae.encode(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="must lie in"):
        tiny_model.vqvae.decode(torch.full((1, 2, 2), 64))
    no_vq = CogViewForCausalLM(tiny_config(vq_config=None))
    with pytest.raises(ValueError, match="no VQ-VAE"):
        no_vq.decode_image_tokens(codes)


class HostReads(torch.overrides.TorchFunctionMode):
    """Records every tensor method that hands a value to Python (a host sync on an accelerator)."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("txt_loss_scale", [1.0, 2.0])
def test_a_training_step_reads_no_tensor_on_the_host_but_a_users_forward_checks_its_input(txt_loss_scale):
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config(txt_loss_scale=txt_loss_scale)).train()
    ids = random_ids(4, 30, model.config)
    with HostReads() as host:
        model(ids, labels=ids, num_items_in_batch=torch.tensor(116)).loss.backward()
    assert host.reads == [], host.reads
    model.eval()
    with HostReads() as host, torch.no_grad():
        model(ids)
    assert host.reads  # the same forward outside training checks the ids and positions
    with pytest.raises(ValueError, match="must lie in"):
        model(torch.tensor([[1, model.config.vocab_size]]))
