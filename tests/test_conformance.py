"""Behaviours transformers' common model tests expect of every model (regressions found by running them on CogView)."""

import pytest
import torch
from conftest import tiny_config
from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

from modeling_cogview import CogViewForCausalLM


TEXT_IDS = range(64, 164)  # the tiny config's text range: plain text prompts, as the common tests use


def text_ids(batch: int, length: int, seed: int = 0) -> torch.LongTensor:
    return torch.randint(TEXT_IDS.start, TEXT_IDS.stop, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model() -> CogViewForCausalLM:
    torch.manual_seed(0)
    return CogViewForCausalLM(tiny_config(vq_config=None)).eval()


def test_generation_from_inputs_embeds_with_and_without_a_prompt_of_ids(model):
    ids = text_ids(2, 5)
    embeds = model.get_input_embeddings()(ids)
    from_ids = model.generate(ids, max_new_tokens=4, do_sample=False)
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False)
    assert torch.equal(from_embeds, from_ids[:, 5:])  # only the new tokens come back, as for every decoder
    both = model.generate(input_ids=ids, inputs_embeds=embeds, max_new_tokens=4, do_sample=False)
    assert torch.equal(both, from_ids)
    static = model.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, cache_implementation="static")
    assert torch.equal(static, from_embeds)
    beams = model.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, num_beams=2)
    assert beams.shape == (2, 4)


def test_packed_sequences_with_position_ids_equal_the_padded_batch(model):
    first, second = text_ids(1, 7, seed=1), text_ids(1, 4, seed=2)
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(4)])[None]
    # two sequences of 7 + 4 tokens, packed longer than a short model's positions would allow if counted as one
    short = CogViewForCausalLM(tiny_config(vq_config=None, max_position_embeddings=8))
    short.load_state_dict({k: v[:8] if k.endswith("embed_positions.weight") else v for k, v in model.state_dict().items()})
    for attention in ("eager", "sdpa"):
        short.set_attn_implementation(attention)
        with torch.no_grad():
            packed_logits = short(packed, position_ids=positions, use_cache=False).logits
            alone = [short(first).logits, short(second).logits]
        torch.testing.assert_close(packed_logits, torch.cat(alone, dim=1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="position 10 exceeds max_position_embeddings"):
        short(packed)  # unpacked, the same 11 tokens do not fit 8 positions


def test_trainer_with_flattening_collator_gives_the_padded_loss(model, tmp_path):
    rows = [{"input_ids": ids, "labels": ids} for ids in (text_ids(1, n, seed=n)[0].tolist() for n in (6, 9, 4))]
    flat = DataCollatorWithFlattening(return_position_ids=True)(rows)
    assert flat["input_ids"].shape[0] == 1 and "position_ids" in flat
    with torch.no_grad():
        packed_loss = model(**flat, use_cache=False).loss
        padded_losses = [model(torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss for r in rows]
    counts = torch.tensor([len(r["input_ids"]) - 1 for r in rows], dtype=torch.float)
    torch.testing.assert_close(packed_loss, (torch.stack(padded_losses) * counts).sum() / counts.sum(), atol=1e-5, rtol=1e-5)

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=3, report_to=[], use_cpu=True, remove_unused_columns=False)
    trainer = Trainer(model=model.train(), args=args, train_dataset=rows * 2, data_collator=DataCollatorWithFlattening())
    assert trainer.train().training_loss > 0


def test_a_model_built_from_a_config_generates_greedily_but_a_saved_release_folder_samples(model, tiny_model_dir):
    ids = text_ids(1, 5)
    assert not model.generation_config.do_sample
    assert torch.equal(model.generate(ids, max_new_tokens=6), model.generate(ids, max_new_tokens=6))
    folder = CogViewForCausalLM.from_pretrained(tiny_model_dir)
    assert folder.generation_config.do_sample and folder.generation_config.top_k == 200


def test_the_fp32_module_list_names_modules_that_exist():
    without = CogViewForCausalLM(tiny_config(vq_config=None))
    assert not without._keep_in_fp32_modules_strict
    with_vqvae = CogViewForCausalLM(tiny_config())
    names = {name for name, _ in with_vqvae.named_modules()}
    assert with_vqvae._keep_in_fp32_modules_strict == {"vqvae"} and "model.vqvae" in names  # a module name's part


def test_the_tensor_parallel_plan_shards_the_tied_embedding_with_its_head(model):
    plan = model.tp_plan
    assert plan["lm_head"] == "colwise_gather_output" and plan["model.embed_tokens"] == "embedding_rowwise"
    for name in ("q_proj", "k_proj", "v_proj"):
        assert plan[f"model.layers.*.self_attn.{name}"] == "colwise"
    assert plan["model.layers.*.self_attn.o_proj"] == "rowwise"
    assert plan["model.layers.*.mlp.fc1"] == "colwise" and plan["model.layers.*.mlp.fc2"] == "rowwise"
