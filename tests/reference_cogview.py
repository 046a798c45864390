"""An independent, literal re-implementation of the original CogView forward and VQ-VAE, working directly on the
release's state-dict names (fused QKV, `third`/`fourth` LayerNorms, whole-tensor PB-relax max). Used to check the
converter on checkpoints of dimensions the golden data does not cover."""

import builtins

import numpy as np
import torch
import torch.nn.functional as F


def _ln(sd, name, x, per_token):
    # the release takes the max over the whole tensor; the port per token (DESIGN.md)
    peak = x.abs().amax(-1, keepdim=True) if per_token else x.abs().max()
    x = x / (peak.detach() / 8)
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-5)


def reference_logits(sd: dict, input_ids: torch.Tensor, num_heads: int, per_token_max: bool = False) -> torch.Tensor:
    """Full causal forward of one sequence batch, fp32, original key names (SAT's word-embedding name accepted)."""
    sd = {k.replace("transformer.word_embeddings", "word_embeddings"): v.float() for k, v in sd.items()}
    b, t = input_ids.shape
    x = sd["word_embeddings.weight"][input_ids] + sd["transformer.position_embeddings.weight"][:t]
    h = x.shape[-1]
    d = h // num_heads
    mask = torch.tril(torch.ones(t, t))
    num_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.layers.")})
    for i in range(num_layers):
        p = f"transformer.layers.{i}"
        a = _ln(sd, f"{p}.input_layernorm", x, per_token_max)
        qkv = a @ sd[f"{p}.attention.query_key_value.weight"].t() + sd[f"{p}.attention.query_key_value.bias"]
        q, k, v = (z.view(b, t, num_heads, d).transpose(1, 2) for z in qkv.split(h, dim=-1))
        scores = (q / d**0.5) @ k.transpose(-1, -2)
        scores = scores * mask - 10000.0 * (1 - mask)
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        a = ctx @ sd[f"{p}.attention.dense.weight"].t() + sd[f"{p}.attention.dense.bias"]
        x = x + _ln(sd, f"{p}.third_layernorm", a, per_token_max)
        m = _ln(sd, f"{p}.post_attention_layernorm", x, per_token_max)
        m = F.gelu(m @ sd[f"{p}.mlp.dense_h_to_4h.weight"].t() + sd[f"{p}.mlp.dense_h_to_4h.bias"], approximate="tanh")
        m = m @ sd[f"{p}.mlp.dense_4h_to_h.weight"].t() + sd[f"{p}.mlp.dense_4h_to_h.bias"]
        x = x + _ln(sd, f"{p}.fourth_layernorm", m, per_token_max)
    return _ln(sd, "transformer.final_layernorm", x, per_token_max) @ sd["word_embeddings.weight"].t()


def reference_vqvae_encode(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    sd = {k.removeprefix("module."): v.float() for k, v in sd.items()}
    convs = sorted(int(k.split(".")[2]) for k in sd if k.startswith("enc_b.blocks.") and k.endswith("weight"))
    x = pixels
    for n, i in enumerate(convs):
        w = sd[f"enc_b.blocks.{i}.weight"]
        x = F.conv2d(x, w, sd[f"enc_b.blocks.{i}.bias"], stride=1 if w.shape[-1] == 1 else 2, padding=0 if w.shape[-1] == 1 else 1)
        if n < len(convs) - 1:
            x = F.relu(x)
    flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    embed = sd["quantize_t.embed"]
    dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True)
    return (-dist).max(1)[1].view(x.shape[0], x.shape[2], x.shape[3])


def make_original_checkpoint(directory, layout: str, num_layers: int, hidden: int, heads: int, vocab: int, positions: int, seed: int = 0) -> dict:
    """Write a random checkpoint in the release ('megatron') or SwissArmyTransformer ('sat') layout, fp16, with the
    DeepSpeed extras (numpy RNG state, a set) that a plain weights_only load refuses. Returns the fp16 state dict."""
    import json
    from pathlib import Path

    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, scale=0.05: (torch.randn(*shape, generator=g) * scale).half()  # noqa: E731
    sd = {"word_embeddings.weight": rnd(vocab, hidden, scale=0.5), "transformer.position_embeddings.weight": rnd(positions, hidden, scale=0.5)}
    for i in range(num_layers):
        p = f"transformer.layers.{i}"
        for ln in ("input_layernorm", "third_layernorm", "post_attention_layernorm", "fourth_layernorm"):
            sd[f"{p}.{ln}.weight"] = (1 + rnd(hidden, scale=0.2)).half()
            sd[f"{p}.{ln}.bias"] = rnd(hidden, scale=0.2)
        sd[f"{p}.attention.query_key_value.weight"] = rnd(3 * hidden, hidden, scale=0.3)
        sd[f"{p}.attention.query_key_value.bias"] = rnd(3 * hidden, scale=0.3)
        sd[f"{p}.attention.dense.weight"] = rnd(hidden, hidden, scale=0.2)
        sd[f"{p}.attention.dense.bias"] = rnd(hidden)
        sd[f"{p}.mlp.dense_h_to_4h.weight"] = rnd(4 * hidden, hidden, scale=0.2)
        sd[f"{p}.mlp.dense_h_to_4h.bias"] = rnd(4 * hidden)
        sd[f"{p}.mlp.dense_4h_to_h.weight"] = rnd(hidden, 4 * hidden, scale=0.2)
        sd[f"{p}.mlp.dense_4h_to_h.bias"] = rnd(hidden)
    sd["transformer.final_layernorm.weight"] = (1 + rnd(hidden, scale=0.2)).half()
    sd["transformer.final_layernorm.bias"] = rnd(hidden, scale=0.2)

    directory = Path(directory)
    (directory / "7").mkdir(parents=True)
    stored = dict(sd)
    if layout == "sat":
        stored["transformer.word_embeddings.weight"] = stored.pop("word_embeddings.weight")
        (directory / "latest").write_text("7")
        config = {"model_class": "CachedAutoregressiveModel", "num_layers": num_layers, "hidden_size": hidden,
                  "num_attention_heads": heads, "vocab_size": vocab, "layernorm_order": "sandwich",
                  "model_parallel_size": 1, "max_sequence_length": positions}  # fmt: skip
        (directory / "model_config.json").write_text(json.dumps(config))
    else:
        (directory / "latest_checkpointed_iteration.txt").write_text("7")
    extras = {"iteration": 7, "np_rng_state": np.random.RandomState(0).get_state(), "csr_tensor_module_names": builtins.set()}
    torch.save({"module": stored, **extras}, directory / "7" / "mp_rank_00_model_states.pt")
    return sd


def make_original_vqvae(path, channel: int, embed_dim: int, n_embed: int, num_downsamples: int, seed: int = 0) -> dict:
    """A random VQ-VAE state dict in the release file's form (`module.` prefix, [dim, n] codebook, EMA buffers)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    sd, c_in = {}, 3
    for i in range(num_downsamples):
        sd[f"enc_b.blocks.{2 * i}.weight"], sd[f"enc_b.blocks.{2 * i}.bias"] = rnd(channel, c_in, 4, 4), rnd(channel)
        c_in = channel
    last = 2 * num_downsamples
    sd[f"enc_b.blocks.{last}.weight"], sd[f"enc_b.blocks.{last}.bias"] = rnd(embed_dim, channel, 1, 1), rnd(embed_dim)
    sd["quantize_t.embed"] = rnd(embed_dim, n_embed)
    sd["quantize_t.cluster_size"] = torch.ones(n_embed)
    sd["quantize_t.embed_avg"] = sd["quantize_t.embed"].clone()
    c_in = embed_dim
    for i in range(num_downsamples):
        sd[f"dec.blocks.{2 * i}.weight"], sd[f"dec.blocks.{2 * i}.bias"] = rnd(c_in, channel, 4, 4), rnd(channel)
        c_in = channel
    sd[f"dec.blocks.{last}.weight"], sd[f"dec.blocks.{last}.bias"] = rnd(3, channel, 1, 1), rnd(3)
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    return sd
