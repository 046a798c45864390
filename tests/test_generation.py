"""generate with CogView's rules: valid ids in every mode, cache/batch/CFG equivalences, completion, streaming."""

import copy

import PIL.Image
import pytest
import torch
from torch import nn

from modeling_cogview import CogViewForCausalLM
from modeling_cogview.generation_cogview import CogViewGuidanceTwins, CogViewLogitsProcessor
from processing_cogview import CogViewProcessor


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return CogViewForCausalLM.from_pretrained(tiny_model_dir).eval(), CogViewProcessor.from_pretrained(tiny_model_dir)


PROMPTS = ["一只可爱的猫", "老虎 在 草地上 散步"]


def test_text_to_image_batch_yields_valid_images(model_and_processor):
    model, processor = model_and_processor
    torch.manual_seed(0)
    inputs = processor(text=PROMPTS)
    sequences = model.generate(**inputs, num_return_sequences=3, top_k=None, progress_bar=False)
    assert sequences.shape == (6, inputs["input_ids"].shape[1] + 16)  # the default length: one full 4x4 grid
    image_tokens = sequences[:, -16:]
    assert bool((image_tokens >= 0).all() and (image_tokens < model.config.image_vocab_size).all())
    images = processor.postprocess(model.decode_image_tokens(image_tokens))
    assert len(images) == 6 and all(isinstance(i, PIL.Image.Image) and i.size == (16, 16) for i in images)


def test_sampling_is_reproducible_with_a_seed(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS[0])
    torch.manual_seed(3)
    first = model.generate(**inputs, num_return_sequences=2, progress_bar=False)
    torch.manual_seed(3)
    assert torch.equal(first, model.generate(**inputs, num_return_sequences=2, progress_bar=False))


def test_greedy_is_the_same_with_and_without_cache_and_batched_or_alone(model_and_processor):
    model, processor = model_and_processor
    batched = model.generate(**processor(text=PROMPTS), do_sample=False, progress_bar=False)[:, -16:]
    no_cache = model.generate(**processor(text=PROMPTS), do_sample=False, use_cache=False, progress_bar=False)[:, -16:]
    alone = torch.cat([model.generate(**processor(text=p), do_sample=False, progress_bar=False)[:, -16:] for p in PROMPTS])
    assert torch.equal(batched, no_cache) and torch.equal(batched, alone)
    static = model.generate(**processor(text=PROMPTS), do_sample=False, cache_implementation="static", progress_bar=False)
    assert torch.equal(static[:, -16:], batched)


def test_guidance_twins_replace_the_text_and_keep_the_image(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)  # left-padded: the first prompt is shorter
    twins = CogViewGuidanceTwins(model.config)
    prompt_positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    start = twins.text_start(inputs["input_ids"])
    ids, mask, positions = twins.double(inputs["input_ids"], inputs["attention_mask"], prompt_positions, start)
    token = processor.tokenizer.convert_tokens_to_ids
    assert torch.equal(ids[:2], inputs["input_ids"]) and torch.equal(mask[:2], inputs["attention_mask"])
    for twin, twin_mask, twin_positions in zip(ids[2:], mask[2:], positions[2:]):
        assert twin[twin_mask.bool()].tolist() == [token("[ROI1]"), token("[BASE]"), token("[BOI1]")]
        assert twin_positions[twin_mask.bool()].tolist() == [0, 1, 2]
    # a decode step: the last id of each row, with the mask of all columns so far
    step_ids, step_mask, step_positions = twins.double(inputs["input_ids"][:, -1:], inputs["attention_mask"], prompt_positions[:, -1:], start)
    assert step_ids[2:, 0].tolist() == [token("[BOI1]")] * 2 and step_positions[2:, 0].tolist() == [2, 2]
    assert torch.equal(step_mask, mask)
    plain = model.generate(**inputs, do_sample=False)
    assert torch.equal(plain, model.generate(**inputs, do_sample=False, guidance_scale=1.0))


def test_guidance_changes_the_image_and_matches_its_definition(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS[:1])
    guided = model.generate(**inputs, do_sample=False, guidance_scale=5.0, progress_bar=False)
    assert not torch.equal(guided, model.generate(**inputs, do_sample=False, progress_bar=False))
    static = model.generate(**inputs, do_sample=False, guidance_scale=5.0, cache_implementation="static", progress_bar=False)
    assert torch.equal(guided, static)
    # first guided token = argmax of uncond + 5 (cond - uncond) over image ids, from two plain forwards
    unconditional = processor.tokenizer.convert_tokens_to_ids(["[ROI1]", "[BASE]", "[BOI1]"])
    with torch.no_grad():
        cond = model(**inputs).logits[0, -1].log_softmax(-1)
        uncond = model(torch.tensor([unconditional])).logits[0, -1].log_softmax(-1)
    expected = (uncond + 5.0 * (cond - uncond))[:64].argmax()
    assert guided[0, inputs["input_ids"].shape[1]] == expected


def test_captioning_yields_text_ids(model_and_processor):
    model, processor = model_and_processor
    torch.manual_seed(0)
    image = PIL.Image.new("RGB", (20, 24), (200, 30, 30))
    inputs = processor(images=[image, image])
    sequences = model.generate(**inputs, progress_bar=False)
    caption = sequences[:, inputs["input_ids"].shape[1] :]
    assert caption.shape == (2, 20)  # the release's caption length
    config = model.config
    assert bool(((caption >= config.text_token_offset) & (caption < config.command_token_offset)).all())
    assert isinstance(processor.decode_caption(sequences[0]), str)


def test_completion_keeps_the_given_rows(model_and_processor):
    model, processor = model_and_processor
    codes = torch.randint(0, 64, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    inputs = processor(text=PROMPTS, image_codes=codes, keep_rows=2)
    sequences = model.generate(**inputs, progress_bar=False)
    assert sequences.shape[1] == inputs["input_ids"].shape[1] + 8  # only the two missing rows
    grid = sequences[:, -16:].view(2, 4, 4)
    assert torch.equal(grid[:, :2], codes[:, :2]) and bool((grid < 64).all())


def test_rules_processor_modes():
    from conftest import tiny_config

    config = tiny_config()
    rules = CogViewLogitsProcessor(config)
    roi, base, boi, eoi = (config.command_token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"))
    scores = torch.zeros(4, config.vocab_size)
    rows = [
        [roi, 70, base, boi] + [1] * 4,  # an open image: image ids only
        [boi] + [5] * 16,  # the grid is full: close the image
        [70] * 17,  # plain text: anything but image ids
        [base, boi] + [1] * 12 + [eoi, roi, 70],  # a caption: text ids only
    ]
    length = max(len(r) for r in rows)
    ids = torch.tensor([[config.pad_token_id] * (length - len(r)) + r for r in rows])
    allowed = torch.isfinite(rules(ids, scores))
    vocab = torch.arange(config.vocab_size)
    assert torch.equal(allowed[0], vocab < 64)
    assert torch.equal(allowed[1], vocab == eoi)
    assert torch.equal(allowed[2], (vocab >= 64) & (vocab < config.num_real_tokens))
    assert torch.equal(allowed[3], (vocab >= 64) & (vocab < 164))


def test_progress_and_preview(model_and_processor):
    model, processor = model_and_processor
    previews = []
    model.generate(**processor(text=PROMPTS), preview_callback=previews.append, preview_every_rows=1, progress_bar=True)
    assert [p.shape for p in previews] == [(2, 4), (2, 8), (2, 12), (2, 16)]


def test_caption_scores_are_the_sum_of_text_log_probs(model_and_processor):
    model, processor = model_and_processor
    codes = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    inputs = processor(image_codes=codes, text=["一只可爱的猫", "猫"])
    scores = model.caption_scores(**inputs)
    for row in range(2):
        ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()][None]
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        logits[:, :64] = -float("inf")
        start = ids[0].tolist().index(processor.token_id("[ROI1]"))
        expected = sum(logits[t].log_softmax(-1)[ids[0, t + 1]] for t in range(start, ids.shape[1] - 1))
        assert torch.allclose(scores[row], expected, atol=1e-4)


def test_guided_completion_twins_keep_the_given_rows(model_and_processor):
    model, processor = model_and_processor
    codes = torch.randint(0, 64, (1, 4, 4), generator=torch.Generator().manual_seed(2))
    inputs = processor(text=PROMPTS[:1], image_codes=codes, keep_rows=1)
    guided = model.generate(**inputs, do_sample=False, guidance_scale=4.0, progress_bar=False)
    assert guided.shape[1] == inputs["input_ids"].shape[1] + 12 and torch.equal(guided[0, -16:-12], codes[0, 0])
    twin = processor.tokenizer.convert_tokens_to_ids(["[ROI1]", "[BASE]", "[BOI1]"]) + codes[0, 0].tolist()
    with torch.no_grad():
        cond = model(**inputs).logits[0, -1].log_softmax(-1)
        uncond = model(torch.tensor([twin])).logits[0, -1].log_softmax(-1)
    assert guided[0, inputs["input_ids"].shape[1]] == (uncond + 4.0 * (cond - uncond))[:64].argmax()


def test_generation_options_are_respected(model_and_processor):
    from transformers import GenerationConfig

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS[:1])
    guided = model.generate(**inputs, guidance_scale=3.0, do_sample=False)
    assert torch.equal(guided, model.generate(**inputs, guidance_scale=3.0, do_sample=False, use_cache=False))
    config = GenerationConfig(do_sample=False, max_new_tokens=5, pad_token_id=model.config.pad_token_id)
    assert model.generate(**inputs, generation_config=config, progress_bar=False).shape[1] == inputs["input_ids"].shape[1] + 5
    beams = model.generate(**inputs, num_beams=2, do_sample=False)  # the progress bar stays out of beam search
    assert beams.shape[1] == inputs["input_ids"].shape[1] + 16 and bool((beams[:, -16:] < 64).all())
    begun = processor(image_codes=torch.zeros(1, 16, dtype=torch.long), text="一只")  # a caption already begun
    assert model.generate(**begun, progress_bar=False).shape[1] == begun["input_ids"].shape[1] + 20


def test_a_second_image_grid_closes_with_its_own_end_token():
    from conftest import tiny_config

    config = tiny_config()
    ids = torch.tensor([[config.command_token_id("[BOI2]")] + [3] * 16])
    allowed = torch.isfinite(CogViewLogitsProcessor(config)(ids, torch.zeros(1, config.vocab_size)))[0]
    assert allowed.nonzero().flatten().tolist() == [config.command_token_id("[EOI2]")]


def test_guidance_default_from_generation_config(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS[:1])
    explicit = model.generate(**inputs, do_sample=False, guidance_scale=3.0, progress_bar=False)
    model.generation_config.guidance_scale = 3.0
    try:
        assert torch.equal(model.generate(**inputs, do_sample=False, progress_bar=False), explicit)
        caption = processor(image_codes=torch.zeros(1, 16, dtype=torch.long))  # the default does not apply to captions
        assert model.generate(**caption, progress_bar=False).shape[1] == caption["input_ids"].shape[1] + 20
    finally:
        model.generation_config.guidance_scale = None
    with pytest.raises(ValueError, match="text-to-image prompts"):
        model.generate(**caption, guidance_scale=2.0, progress_bar=False)


def test_self_reranking_keeps_the_best_scored_candidate(model_and_processor):
    model, processor = model_and_processor
    torch.manual_seed(0)
    inputs = processor(text=PROMPTS)
    sequences = model.generate(**inputs, num_return_sequences=3, progress_bar=False)
    scores = model.self_rerank_scores(sequences)
    # the score of one sample is the caption score of its text given its image
    text = processor.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]
    caption = processor(image_codes=sequences[4:5, -16:], text=PROMPTS[1])
    assert caption["input_ids"][0, -len(text) :].tolist() == text
    torch.testing.assert_close(scores[4], model.caption_scores(**caption)[0], atol=1e-4, rtol=1e-5)
    best = model.best_of(sequences, 3)
    assert best.shape == (2, sequences.shape[1])
    for group in range(2):
        assert torch.equal(best[group], sequences[3 * group + int(scores[3 * group : 3 * group + 3].argmax())])
    assert torch.equal(model.best_of(sequences, 1), sequences)


def test_the_drawing_call_returns_each_images_best_candidate_with_the_models_defaults(model_and_processor):
    """generate(generation_mode="image") = sample num_return_sequences x candidates, keep the best of each group by
    self-reranking, return its image tokens; the candidates default to generation_config.rerank_candidates, and an
    option given as None takes the config's value instead of erasing it."""
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    torch.manual_seed(0)
    drawn = model.generate(**inputs, generation_mode="image", num_return_sequences=2, rerank_candidates=3)
    torch.manual_seed(0)
    sequences = model.generate(**inputs, num_return_sequences=6)
    assert drawn.shape == (4, 16) and torch.equal(drawn, model.best_of(sequences, 3)[:, -16:])
    model.generation_config.rerank_candidates, model.generation_config.guidance_scale = 3, 2.0
    try:
        torch.manual_seed(0)
        by_default = model.generate(**inputs, generation_mode="image", num_return_sequences=2, guidance_scale=None, top_k=None)
        torch.manual_seed(0)
        guided = model.generate(**inputs, generation_mode="image", num_return_sequences=2, rerank_candidates=3, guidance_scale=2.0)
        assert torch.equal(by_default, guided)
    finally:
        model.generation_config.rerank_candidates = model.generation_config.guidance_scale = None
    with pytest.raises(ValueError, match="generation_mode='image'"):
        model.generate(**inputs, rerank_candidates=2)
    with pytest.raises(ValueError, match="at least 1"):
        model.generate(**inputs, generation_mode="image", rerank_candidates=0)


def test_guidance_with_beam_search_is_refused_before_any_compute(model_and_processor):
    model, processor = model_and_processor
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match="beam search"):
            model.generate(**processor(text=PROMPTS[:1]), guidance_scale=3.0, num_beams=2, do_sample=False)
    finally:
        hook.remove()
    assert not calls


def test_standard_generation_options_work_with_guidance(model_and_processor):
    from transformers import TextStreamer

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    guided = model.generate(**inputs, guidance_scale=3.0, do_sample=False)
    chunked = model.generate(**inputs, guidance_scale=3.0, do_sample=False, prefill_chunk_size=3)
    assert torch.equal(guided, chunked)
    out = model.generate(**inputs, guidance_scale=3.0, do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences, guided)
    assert len(out.scores) == 16 and out.scores[0].shape == (2, model.config.vocab_size)
    assert bool(torch.isinf(out.scores[0][:, 64:]).all())  # the rules masked everything but image ids

    class Collect(TextStreamer):
        def __init__(self):
            self.values = []

        def put(self, value):
            self.values.append(value)

        def end(self):
            self.values.append("end")

    streamer = Collect()  # a user's streamer is never replaced, with or without the progress bar
    model.generate(**processor(text=PROMPTS[0]), do_sample=False, streamer=streamer, progress_bar=True)
    assert len(streamer.values) == 1 + 16 + 1 and streamer.values[-1] == "end"
    torch.manual_seed(0)
    four = model.generate(**inputs, guidance_scale=3.0, num_return_sequences=2)
    assert four.shape[0] == 4 and bool((four[:, -16:] < 64).all())


def test_image_rows_head_samples_the_same_ids_as_the_full_head(model_and_processor):
    from unittest import mock

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    image_ids = model.config.image_vocab_size
    for guidance in (None, 3.0):
        torch.manual_seed(5)
        narrow = model.generate(**inputs, num_return_sequences=2, guidance_scale=guidance, top_k=None)
        with mock.patch.object(model, "image_logits", side_effect=AssertionError("the full head was asked for")):
            with pytest.raises(AssertionError):  # the narrow head really runs inside an image
                model.generate(**inputs, max_new_tokens=1)
        with mock.patch.object(model, "image_logits", lambda hidden: model.lm_head(hidden)[..., :image_ids]):  # full head
            torch.manual_seed(5)
            full = model.generate(**inputs, num_return_sequences=2, guidance_scale=guidance, top_k=None)
        assert torch.equal(narrow, full)


def test_image_rows_head_keeps_a_lora_on_the_head(model_and_processor):
    from peft import LoraConfig, get_peft_model

    model, _ = model_and_processor
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["lm_head"], init_lora_weights=False)).eval()
    hidden = torch.randn(2, 3, model.config.hidden_size)
    head = adapted.base_model.model
    full = head.lm_head(hidden)
    assert not torch.allclose(full, nn.functional.linear(hidden, head.lm_head.weight))  # the LoRA changes the head
    image_ids = model.config.image_vocab_size
    torch.testing.assert_close(head.image_logits(hidden)[..., :image_ids], full[..., :image_ids])


class Identity:  # a caller's processor of a kind generate does not know: it may index scores by id
    def __call__(self, input_ids, scores):
        return scores


@pytest.fixture
def seen_widths(model_and_processor):
    """Per generate call: the widths of the scores top-k ranks, of what every processor is given and returns, and
    whether the model was asked for the image columns alone."""
    from unittest import mock

    from transformers import LogitsProcessorList, TopKLogitsWarper

    model, _ = model_and_processor
    seen = {"top_k": [], "image_columns": [], "changed_shape": []}
    top_k = TopKLogitsWarper.__call__

    def recording_top_k(warper, input_ids, scores):
        seen["top_k"].append(scores.clone())
        return top_k(warper, input_ids, scores)

    def checking_each(processors, input_ids, scores, **kwargs):
        for processor in processors:
            processed = processor(input_ids, scores)
            if processed.shape != scores.shape:
                seen["changed_shape"].append(type(processor).__name__)
            scores = processed
        return scores

    hook = model.register_forward_pre_hook(lambda m, a, kw: seen["image_columns"].append(bool(kw.get("image_tokens_only"))), with_kwargs=True)
    with mock.patch.object(TopKLogitsWarper, "__call__", recording_top_k), mock.patch.object(LogitsProcessorList, "__call__", checking_each):
        yield seen
    hook.remove()


def test_sampling_inside_an_image_runs_over_the_image_columns_only(model_and_processor, seen_widths):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    vocab = model.config.vocab_size
    for guidance in (None, 3.0):
        seen_widths["top_k"].clear()
        narrow = model.generate(**inputs, guidance_scale=guidance, do_sample=True, top_k=5, temperature=1e-4)
        narrow_scores = seen_widths["top_k"][:]
        assert len(narrow_scores) == 16 and all(s.shape == (2, 64) for s in narrow_scores)
        seen_widths["top_k"].clear()
        full = model.generate(**inputs, guidance_scale=guidance, do_sample=True, top_k=5, temperature=1e-4, logits_processor=[Identity()])
        assert all(s.shape == (2, vocab) for s in seen_widths["top_k"])
        assert torch.equal(narrow, full)  # near-greedy: the same ids from the same scores
        assert torch.allclose(narrow_scores[0], seen_widths["top_k"][0][:, :64]) and bool(torch.isinf(seen_widths["top_k"][0][:, 64:]).all())
    seen_widths["top_k"].clear()  # a caption is outside any image: the full width
    image = PIL.Image.new("RGB", (16, 16), (10, 200, 30))
    model.generate(**processor(images=image), do_sample=True, top_k=5, max_new_tokens=3)
    assert [s.shape[-1] for s in seen_widths["top_k"]] == [vocab] * 3
    greedy = model.generate(**inputs, do_sample=False)
    assert torch.equal(greedy, model.generate(**inputs, do_sample=False, logits_processor=[Identity()]))
    assert not seen_widths["changed_shape"]


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_processors_and_returned_scores_see_the_width_the_library_promises(model_and_processor, seen_widths, guidance):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    vocab, batch = model.config.vocab_size, len(PROMPTS)
    # output_scores / output_logits: every step keeps the full width, and guided logits are the caller's rows
    out = model.generate(**inputs, guidance_scale=guidance, do_sample=False, output_scores=True, output_logits=True, return_dict_in_generate=True)
    assert [s.shape for s in out.scores] == [(batch, vocab)] * 16 and [s.shape for s in out.logits] == [(batch, vocab)] * 16
    assert not any(seen_widths["image_columns"])
    # the library's processors that read scores by id get the full width, and do their job
    seen_widths["image_columns"].clear()
    suppressed = model.generate(**inputs, guidance_scale=guidance, do_sample=False, suppress_tokens=out.sequences[:, -16:].unique().tolist())
    assert not any(seen_widths["image_columns"]) and all(s.shape[-1] == vocab for s in seen_widths["top_k"])
    assert not set(suppressed[:, -16:].flatten().tolist()) & set(out.sequences[:, -16:].flatten().tolist())
    model.generate(**inputs, guidance_scale=guidance, do_sample=True, top_k=5, repetition_penalty=1.3, no_repeat_ngram_size=3)
    assert not any(seen_widths["image_columns"])
    # no processor changed the width it was given, narrow or full
    seen_widths["image_columns"].clear()
    model.generate(**inputs, guidance_scale=guidance, do_sample=True, top_k=5, top_p=0.9, temperature=0.8)
    assert all(seen_widths["image_columns"]) and not seen_widths["changed_shape"]


def test_a_guided_forward_returns_the_rows_guided_logits(model_and_processor):
    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    twins = CogViewGuidanceTwins(model.config)
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    ids, mask, doubled_positions = twins.double(inputs["input_ids"], inputs["attention_mask"], positions, twins.text_start(inputs["input_ids"]))
    with torch.no_grad():
        both = model(ids, attention_mask=mask, position_ids=doubled_positions).logits
        guided = model(ids, attention_mask=mask, position_ids=doubled_positions, guidance_scale=3.0).logits
        narrow = model(ids, attention_mask=mask, position_ids=doubled_positions, guidance_scale=3.0, image_tokens_only=True).logits
    assert guided.shape[0] == len(PROMPTS)
    torch.testing.assert_close(guided, both[2:] + 3.0 * (both[:2] - both[2:]))
    torch.testing.assert_close(narrow, guided[..., : model.config.image_vocab_size])
    with pytest.raises(ValueError, match="no loss"):
        model(ids, attention_mask=mask, position_ids=doubled_positions, guidance_scale=3.0, labels=ids)


def test_outside_the_tested_transformers_guidance_takes_the_librarys_path(model_and_processor, monkeypatch):
    from transformers.testing_utils import CaptureLogger

    import modeling_cogview.modeling_cogview as modeling

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)  # left-padded
    near_greedy = dict(do_sample=True, top_k=1, num_return_sequences=2)  # each prompt's rows expanded, as a sampler's
    batched = model.generate(**inputs, guidance_scale=3.0, **near_greedy)
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: rows.append((a[0] if a else kw["input_ids"]).shape[0]), with_kwargs=True)
    monkeypatch.setattr(modeling, "runs_tested_transformers", lambda: False)
    try:
        with CaptureLogger(modeling.logger) as captured:
            fallback = model.generate(**inputs, guidance_scale=3.0, **near_greedy)
    finally:
        hook.remove()
    assert "transformers' own (unbatched) guidance" in captured.out
    assert set(rows) == {4}  # the rows, and the library's separate unconditional forwards: never a doubled batch
    assert torch.equal(fallback, batched)
    assert not torch.equal(fallback, model.generate(**inputs, guidance_scale=1.0, **near_greedy))  # guidance did act


def test_private_overrides_are_few_and_pinned_to_the_installed_transformers():
    """Every private transformers method still overridden, with the signature it was written against: an upstream
    change fails here, not quietly inside generate or loading."""
    import inspect
    import types

    from transformers import Pipeline, PreTrainedModel
    from transformers.generation import GenerationMixin

    from modeling_cogview import CogViewModel, CogViewPreTrainedModel, CogViewVQVAE
    from modeling_cogview.generation_cogview import runs_tested_transformers
    from modeling_cogview.pipelines_cogview import CogViewImageToImagePipeline, CogViewImageToTextPipeline, CogViewTextToImagePipeline

    assert runs_tested_transformers()  # the suite runs where the bundle's own guidance is used
    pinned = {  # parameter names
        (PreTrainedModel, "_init_weights"): ["self", "module"],
        (PreTrainedModel, "_finalize_model_loading"): ["model", "load_config", "loading_info"],
        (Pipeline, "_sanitize_parameters"): ["self", "pipeline_parameters"],
        (Pipeline, "_forward"): ["self", "input_tensors", "forward_parameters"],
    }
    ours = (CogViewForCausalLM, CogViewModel, CogViewPreTrainedModel, CogViewVQVAE, CogViewTextToImagePipeline, CogViewImageToTextPipeline, CogViewImageToImagePipeline)
    overridden = set()
    for cls in ours:
        for name, value in vars(cls).items():
            if name.startswith("_") and not name.startswith("__") and isinstance(value, (staticmethod, classmethod, types.FunctionType)):
                overridden |= {(base, name) for base in (PreTrainedModel, GenerationMixin, Pipeline) if hasattr(base, name)}
    assert not any(base is GenerationMixin for base, _ in overridden)  # generation runs on public inputs only
    assert overridden == set(pinned)
    for (base, name), parameters in pinned.items():
        assert list(inspect.signature(getattr(base, name)).parameters) == parameters, (base.__name__, name)


def test_compiled_static_cache_generation_has_no_graph_break_and_equals_eager(model_and_processor):
    from transformers import CompileConfig

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    eager = model.generate(**inputs, do_sample=False, cache_implementation="static")
    compile_config = CompileConfig(fullgraph=True, backend="eager", mode=None)
    compile_config._compile_all_devices = True  # generate compiles by itself only on accelerators
    torch._dynamo.reset()
    compiled = model.generate(**inputs, do_sample=False, cache_implementation="static", compile_config=compile_config)
    assert torch.equal(eager, compiled)
    guided_eager = model.generate(**inputs, do_sample=False, guidance_scale=3.0, cache_implementation="static")
    guided = model.generate(**inputs, do_sample=False, guidance_scale=3.0, cache_implementation="static", compile_config=compile_config)
    assert torch.equal(guided_eager, guided)


def test_the_whole_length_is_checked_as_generate_counts_it(model_and_processor):
    """prompt + max_new_tokens; else max_length (the total, also for embeddings); else transformers' default 20 new
    tokens. Too long is refused before any compute; what fits runs."""
    from transformers import GenerationConfig

    model, processor = model_and_processor
    positions = model.config.max_position_embeddings
    inputs = processor(text=PROMPTS)
    length = inputs["input_ids"].shape[1]
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    saved = model.generation_config
    try:
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model.generate(**inputs, max_new_tokens=positions - length + 1)
        model.generation_config = GenerationConfig()  # no max_new_tokens of the folder's to take precedence
        with pytest.raises(ValueError, match="max_position_embeddings"):
            model.generate(**inputs, generation_config=GenerationConfig(do_sample=False, max_length=positions + 1))
    finally:
        hook.remove()
        model.generation_config = saved
    assert not calls
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    model.generation_config = GenerationConfig()
    try:
        out = model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_length=positions, do_sample=False)
    finally:
        model.generation_config = saved
    assert out.shape == (2, positions - length)  # max_length counts the embeddings too
    # embeddings beside ids run as embeddings, and a folder's guidance (for id prompts) stays out of their way
    model.generation_config.guidance_scale = 3.0
    try:
        out = model.generate(input_ids=inputs["input_ids"], inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_new_tokens=4)
    finally:
        model.generation_config.guidance_scale = None
    assert out.shape == (2, length + 4)


def test_a_guided_static_cache_is_sized_whatever_sets_the_length(model_and_processor):
    from transformers import GenerationConfig

    model, processor = model_and_processor
    inputs = processor(text=PROMPTS)
    guided = model.generate(**inputs, guidance_scale=3.0, do_sample=False)
    for config in (GenerationConfig(guidance_scale=3.0, do_sample=False, cache_implementation="static", max_new_tokens=16),
                   GenerationConfig(guidance_scale=3.0, do_sample=False, cache_implementation="static", max_cache_len=90, max_new_tokens=16)):  # fmt: skip
        assert torch.equal(model.generate(**inputs, generation_config=config), guided)
    saved = model.generation_config
    model.generation_config = GenerationConfig()  # nothing sets a length: transformers' default 20 new tokens
    try:
        out = model.generate(**inputs, generation_config=GenerationConfig(guidance_scale=3.0, do_sample=False, cache_implementation="static"))
    finally:
        model.generation_config = saved
    assert out.shape[1] == min(inputs["input_ids"].shape[1] + 20, model.config.max_position_embeddings)
