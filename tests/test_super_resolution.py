"""Super-resolution (cogview-sr): the release's positions and window plan from its own code (golden), positions
inside the model on every generate path, given tokens inside the generated part, the processor's layouts, magnify."""

import json

import pytest
import torch
from transformers import GenerationConfig

from conftest import GOLDEN, tiny_config
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.generation_cogview import CogViewGivenTokensLogitsProcessor, restarted_positions
from modeling_cogview.super_resolution_cogview import magnify, magnify_plan


MAGNIFY = json.loads((GOLDEN / "magnify_cases.json").read_text())
POSITIONS = json.loads((GOLDEN / "sr_position_cases.json").read_text())["cases"]
RELEASE_ROI2, RELEASE_MAX_POSITIONS = 58200, 1089


# ---- the release's numbers ----------------------------------------------------------------------------------------


def test_training_positions_are_the_releases():
    case = POSITIONS["training_low_level_sr"]
    ids = torch.tensor(case["input_ids"])  # two right-padded rows with [ROI2] at different indices
    positions = restarted_positions(ids, torch.ones_like(ids), RELEASE_ROI2, training=True, max_positions=RELEASE_MAX_POSITIONS)
    assert positions.tolist() == case["position_ids"]


@pytest.mark.parametrize("name", ["inference_low_level_sr_prompt", "inference_window"])
def test_inference_positions_are_the_releases(name):
    case = POSITIONS[name]
    ids = torch.tensor([case["input_ids"]])
    positions = restarted_positions(ids, None, RELEASE_ROI2, training=False, max_positions=RELEASE_MAX_POSITIONS)
    assert positions[0].tolist() == case["position_ids"]
    roi2 = case["roi2_index"]
    assert positions[0, roi2] == roi2 and positions[0, roi2 + 1] == 1  # one token off the training rule, as released


def test_training_positions_are_clamped_to_the_last_row():
    ids = torch.tensor([[5] * 1200 + [RELEASE_ROI2] + [6] * 10])
    positions = restarted_positions(ids, None, RELEASE_ROI2, training=True, max_positions=RELEASE_MAX_POSITIONS)
    assert positions.max() == RELEASE_MAX_POSITIONS - 1 and positions[0, 1200] == 0


class ReleaseSampler:
    """The golden run's fake sampler: in window w, the missing code at index k of a sequence whose first missing
    index is c becomes (w * 1000 + (k - c)) % 8192. Records the sequences it is handed."""

    def __init__(self):
        self.calls = []

    def __call__(self, sequences):
        (sequence,) = sequences
        window = len(self.calls)
        self.calls.append(list(sequence))
        context = sequence.index(-1)
        target_length = len(sequence) - (len(MAGNIFY["text_tokens"]) + 256 + 5)
        filled = [(window * 1000 + (k - context)) % 8192 if code < 0 else code for k, code in enumerate(sequence)]
        return torch.tensor([filled[-target_length:]])


def test_magnify_feeds_the_releases_nine_windows_and_returns_its_canvas():
    release = GenerationConfig()  # stands in for a 32-grid SR model: only the config is read without a filler
    model = type("Model", (), {"config": tiny_config(vocab_size=58240, text_vocab_size=50000, image_vocab_size=8192, image_grid_size=32,
                                                     super_resolution=True, vq_config=None), "generation_config": release})()  # fmt: skip
    assert [(w.i, w.j, w.rows) for w in magnify_plan(32)] == [tuple(w) for w in MAGNIFY["windows_in_order_i_j_rows"]]
    text = MAGNIFY["text_tokens"][1:-2]  # between [ROI1] and [BASE] [BOI1]
    sampler = ReleaseSampler()
    canvas = magnify(model, torch.tensor([MAGNIFY["source_codes_32x32"]]), [text], fill=sampler)
    for call, expected in zip(sampler.calls, MAGNIFY["calls"], strict=True):
        assert call == expected["sequence"], expected["window"]
        assert call.index(-1) == expected["context_length"]
    assert canvas[0].tolist() == MAGNIFY["magnified_codes_64x64"]


def test_the_plan_scales_to_other_grids():
    plan = magnify_plan(8)  # the digits SR model: 8x8 codes -> 16x16
    assert [(w.i, w.j, w.rows) for w in plan] == [(0, 0, 5), (0, 1, 7), (0, 2, 7), (1, 1, 7), (1, 0, 7), (1, 2, 7), (2, 0, 8), (2, 1, 8), (2, 2, 8)]
    covered = torch.zeros(16, 16, dtype=torch.bool)
    for window in plan:
        covered[window.target_rows, window.target_columns] = True
        assert window.source_rows.stop <= 8 and window.target_columns.stop <= 16
    assert covered.all()
    with pytest.raises(ValueError, match="multiple of 4"):
        magnify_plan(6)


# ---- positions inside the model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sr_model() -> CogViewForCausalLM:
    torch.manual_seed(0)
    return CogViewForCausalLM(tiny_config(super_resolution=True, max_position_embeddings=40, max_sequence_length=64)).eval()


def sr_prompt(config, text: list[int], source: list[int]) -> list[int]:
    token = config.command_token_id
    midfix = [token(name) for name in ("[EOI1]", "[ROI2]", "[POS0]", "[BASE]", "[BOI2]")]
    return [token("[ROI1]"), *text, token("[BASE]"), token("[BOI1]"), *source, *midfix]


def greedy_by_full_forwards(model, prompt: list[int], steps: int) -> list[int]:
    """No cache, no generate: each step a full forward (the model derives the positions from the ids)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1, : model.config.image_vocab_size]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


def test_a_forward_takes_the_inference_rule_and_a_training_forward_the_training_rule(sr_model):
    config = sr_model.config
    ids = torch.tensor([sr_prompt(config, [70, 71, 72], [1, 2, 3, 4]) + list(range(16))])
    roi2 = config.command_token_id("[ROI2]")
    with torch.no_grad():
        inference = restarted_positions(ids, None, roi2, training=False, max_positions=config.max_position_embeddings)
        training = restarted_positions(ids, None, roi2, training=True, max_positions=config.max_position_embeddings)
        assert not torch.equal(inference, training)
        torch.testing.assert_close(sr_model(ids).logits, sr_model(ids, position_ids=inference).logits)
        with_labels = sr_model(ids, labels=ids)
        assert torch.allclose(with_labels.logits, sr_model(ids, position_ids=training).logits)
        assert not torch.allclose(with_labels.logits, sr_model(ids).logits)
    # a base model's positions do not follow [ROI2]
    torch.manual_seed(0)
    base = CogViewForCausalLM(tiny_config(max_position_embeddings=40)).eval()
    with torch.no_grad():
        plain = torch.arange(ids.shape[1])[None]
        torch.testing.assert_close(base(ids).logits, base(ids, position_ids=plain).logits)


def test_generate_on_every_path_equals_full_forwards_with_the_inference_rule(sr_model):
    """Prefill and cached steps, left padding with [ROI2] at different indices, static cache, chunked prefill."""
    config = sr_model.config
    prompts = [sr_prompt(config, [70, 71, 72, 73, 74], [1, 2, 3, 4]), sr_prompt(config, [80], [5, 6, 7, 8])]
    expected = [greedy_by_full_forwards(sr_model, prompt, 16) for prompt in prompts]
    longest = max(map(len, prompts))
    pad = config.pad_token_id
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    for options in ({}, {"cache_implementation": "static"}, {"prefill_chunk_size": 5}):
        generated = sr_model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **options)
        assert generated.shape[1] == longest + 16, options  # the rest of the [BOI2] grid by default
        assert generated[:, longest:].tolist() == expected, options


def test_compiled_static_generation_has_no_graph_break(sr_model):
    from transformers import CompileConfig

    config = sr_model.config
    ids = torch.tensor([sr_prompt(config, [70, 71], [1, 2, 3, 4])])
    compile_config = CompileConfig(fullgraph=True, backend="eager", mode=None)
    compile_config._compile_all_devices = True  # generate compiles by itself only on accelerators
    torch._dynamo.reset()
    compiled = sr_model.generate(ids, do_sample=False, cache_implementation="static", compile_config=compile_config)
    assert compiled[0, ids.shape[1] :].tolist() == greedy_by_full_forwards(sr_model, ids[0].tolist(), 16)


def test_guidance_twins_restart_their_positions_too(sr_model):
    """The twin of an SR row drops the text and keeps the low-resolution image; its positions follow the same rule:
    the first guided token is the argmax of uncond + s (cond - uncond) from two plain forwards."""
    config = sr_model.config
    token = config.command_token_id
    prompt = sr_prompt(config, [70, 71, 72, 73], [1, 2, 3, 4])
    twin = [token("[ROI1]"), token("[BASE]"), token("[BOI1]"), *prompt[prompt.index(token("[BOI1]")) + 1 :]]
    guided = sr_model.generate(torch.tensor([prompt]), do_sample=False, guidance_scale=4.0)
    with torch.no_grad():
        cond = sr_model(torch.tensor([prompt])).logits[0, -1].log_softmax(-1)
        uncond = sr_model(torch.tensor([twin])).logits[0, -1].log_softmax(-1)
    assert guided[0, len(prompt)] == (uncond + 4.0 * (cond - uncond))[: config.image_vocab_size].argmax()
    assert not torch.equal(guided, sr_model.generate(torch.tensor([prompt]), do_sample=False))


# ---- given tokens inside the generated part -----------------------------------------------------------------------


def test_given_tokens_are_kept_and_equal_feeding_them_as_ids(sr_model):
    config = sr_model.config
    prompt = sr_prompt(config, [70, 71, 72], [1, 2, 3, 4])
    given = torch.full((1, 16), -1)
    given[0, 3:9] = torch.tensor([11, 12, 13, 14, 15, 16])
    given[0, 12] = 40
    out = sr_model.generate(torch.tensor([prompt]), do_sample=False, logits_processor=[CogViewGivenTokensLogitsProcessor(given, len(prompt))],
                            output_logits=True, return_dict_in_generate=True)  # fmt: skip
    drawn = out.sequences[0, len(prompt) :]
    assert torch.equal(drawn[given[0] >= 0], given[0][given[0] >= 0])
    # each drawn code is what a full forward over the same ids (the given ones fed as ids) picks
    with torch.no_grad():
        logits = sr_model(out.sequences).logits[0, len(prompt) - 1 : -1, : config.image_vocab_size]
    free = given[0] < 0
    assert torch.equal(drawn[free], logits.argmax(-1)[free])
    torch.testing.assert_close(torch.stack(out.logits)[:, 0, : config.image_vocab_size][free], logits[free], atol=1e-5, rtol=1e-5)
    sampled = sr_model.generate(torch.tensor([prompt]), do_sample=True, top_k=5, logits_processor=[CogViewGivenTokensLogitsProcessor(given, len(prompt))])
    assert torch.equal(sampled[0, len(prompt) :][given[0] >= 0], given[0][given[0] >= 0])  # sampling keeps them too


def test_magnify_with_the_model_feeds_each_windows_sequence_with_the_canvas_codes_in_place(sr_model):
    """The real drawing path: what the model is fed, window by window (one prefill, then one id per step), is the
    window's sequence with the codes the canvas ends with, earlier windows' codes fed as given; images and texts of
    different lengths are batched."""
    config = sr_model.config
    fed = []
    handle = sr_model.model.embed_tokens.register_forward_hook(lambda module, args, output: fed.append(args[0].clone()))
    try:
        torch.manual_seed(0)
        images = torch.randint(0, config.image_vocab_size, (2, 4, 4))
        texts = [[70, 71], [80]]
        canvas = magnify(sr_model, images, texts, do_sample=True, top_k=5)
    finally:
        handle.remove()
    assert canvas.shape == (2, 8, 8) and bool((canvas >= 0).all()) and bool((canvas < config.image_vocab_size).all())
    calls = iter(fed)
    done = torch.zeros(8, 8, dtype=torch.bool)
    for window in magnify_plan(4):
        region = done[window.target_rows, window.target_columns].reshape(-1)
        first_missing = int((~region).nonzero()[0])
        missing = region.numel() - first_missing
        prefill = next(calls)
        steps = [next(calls) for _ in range(missing - 1)]
        fed_sequences = torch.cat([prefill, *steps], dim=1)
        for row, text in enumerate(texts):
            source = images[row, window.source_rows, window.source_columns].reshape(-1).tolist()
            codes = canvas[row, window.target_rows, window.target_columns].reshape(-1).tolist()
            expected = sr_prompt(config, text, source) + codes[:-1]
            assert fed_sequences[row, -len(expected) :].tolist() == expected, (window, row)
            assert set(fed_sequences[row, : -len(expected)].tolist()) <= {config.pad_token_id}  # left padding only
        done[window.target_rows, window.target_columns] = True
    assert next(calls, None) is None and bool(done.all())


# ---- conversion ---------------------------------------------------------------------------------------------------


def test_a_cogview_sr_folder_converts_to_an_sr_model_with_the_releases_sampling(tmp_path):
    import shutil

    from modeling_cogview.convert_cogview_checkpoint import convert
    from processing_cogview import CogViewProcessor

    shutil.copytree(GOLDEN / "cogview-tiny-megatron", tmp_path / "cogview-sr")  # the release's folder name says SR
    convert(tmp_path / "cogview-sr", tmp_path / "sr", num_attention_heads=4, vqvae_path=GOLDEN / "vqvae-tiny.pt",
            tokenizer_path=GOLDEN / "tokenizer" / "cog-pretrain.model", dtype=torch.float32)  # fmt: skip
    config = json.loads((tmp_path / "sr" / "config.json").read_text())
    assert config["super_resolution"] is True and config["max_sequence_length"] == 1345 and config["max_position_embeddings"] == 1089
    sampling = json.loads((tmp_path / "sr" / "generation_config.json").read_text())
    assert (sampling["top_k"], sampling["temperature"], sampling["max_new_tokens"]) == (200, 1.02, 1024)
    processor = CogViewProcessor.from_pretrained(tmp_path / "sr")
    assert processor.super_resolution and processor.max_length == 1345
    prompt = processor(text="一只猫", image_codes=torch.zeros(256, dtype=torch.long))  # the default task of an SR processor
    text = processor.tokenizer("一只猫", add_special_tokens=False)["input_ids"]
    assert prompt["input_ids"][0].tolist() == [58199, *text, 58208, 58193, *[0] * 256, 58196, 58200, 58210, 58208, 58194]
    model = CogViewForCausalLM.from_pretrained(tmp_path / "sr").eval()
    ids = torch.cat([prompt["input_ids"], torch.randint(0, 8192, (1, 1024))], dim=1)  # 1,291 tokens > 1,089 positions
    with torch.no_grad():
        assert model(ids).logits.shape[1] == ids.shape[1]
    convert(GOLDEN / "cogview-tiny-megatron", tmp_path / "base", num_attention_heads=4)
    assert not json.loads((tmp_path / "base" / "config.json").read_text()).get("super_resolution")


# ---- the processor's layouts ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sr_processor(tmp_path_factory):
    from processing_cogview import CogViewProcessor

    config = tiny_config(vocab_size=50100, text_vocab_size=50000, super_resolution=True, max_position_embeddings=40, max_sequence_length=64)
    return CogViewProcessor.from_sentencepiece(GOLDEN / "tokenizer" / "cog-pretrain.model", config)


def test_sr_prompts_from_pixels_or_codes_and_training_sequences(sr_processor):
    import PIL.Image

    ids = sr_processor.tokenizer.convert_tokens_to_ids
    midfix = ids(["[EOI1]", "[ROI2]", "[POS0]", "[BASE]", "[BOI2]"])
    text = sr_processor.tokenizer("猫", add_special_tokens=False)["input_ids"]
    by_codes = sr_processor(text="猫", image_codes=[[1, 2], [3, 4]])  # the 2x2 low-resolution grid of a 4x4 model
    assert by_codes["input_ids"][0].tolist() == [ids("[ROI1]"), *text, ids("[BASE]"), ids("[BOI1]"), 1, 2, 3, 4, *midfix]
    by_pixels = sr_processor(text=["猫", "老虎"], images=[PIL.Image.new("RGB", (40, 30), "white")] * 2)
    assert by_pixels["pixel_values"].shape == (2, 3, 8, 8)  # read at half the 16 px the model draws
    assert (by_pixels["input_ids"] == ids("[MASK]")).sum(-1).tolist() == [4, 4]
    training = sr_processor(text=["猫"], image_codes=[[1, 2, 3, 4]], target_codes=[list(range(16))], return_labels=True)
    assert training["input_ids"][0].tolist() == by_codes["input_ids"][0].tolist() + list(range(16))
    assert torch.equal(training["labels"], training["input_ids"])


def test_bad_sr_combinations_get_clear_errors(sr_processor):
    with pytest.raises(ValueError, match="needs the input image"):
        sr_processor(text="猫", task="super-resolution")
    with pytest.raises(ValueError, match="4 codes"):
        sr_processor(text="猫", image_codes=[list(range(16))])  # a full-size image is not the low-resolution input
    with pytest.raises(ValueError, match="target_codes"):
        sr_processor(text="猫", image_codes=[[1, 2, 3, 4]], return_labels=True)
    with pytest.raises(ValueError, match="task='super-resolution'"):
        sr_processor(text="猫", image_codes=[list(range(16))], task="image-to-text", target_codes=[[0] * 16])


def test_a_base_processor_and_model_refuse_what_only_sr_models_do(sr_model):
    from processing_cogview import CogViewProcessor

    base = CogViewProcessor.from_sentencepiece(GOLDEN / "tokenizer" / "cog-pretrain.model", tiny_config(vocab_size=50100, text_vocab_size=50000))
    with pytest.raises(ValueError, match="super-resolution model's processor"):
        base(text="猫", image_codes=[[1, 2, 3, 4]], task="super-resolution")
    prompt = torch.tensor([sr_prompt(sr_model.config, [70], [1, 2, 3, 4])])
    with pytest.raises(ValueError, match="rerank_candidates=1"):
        sr_model.generate(prompt, generation_mode="image", rerank_candidates=2)


# ---- entry points -------------------------------------------------------------------------------------------------


def digit_like(size: int):
    import numpy as np
    import PIL.Image

    canvas = np.zeros((size, size), np.uint8)
    canvas[size // 4 : 3 * size // 4, size // 3 : size // 2] = 255
    return PIL.Image.fromarray(canvas, "L")


def test_image_to_image_pipeline_doubles_by_magnify_or_low_level(tiny_sr_model_dir):
    import numpy as np
    from transformers import pipeline

    double = pipeline("image-to-image", model=str(tiny_sr_model_dir))
    image = digit_like(16)
    magnified = double(image, prompt="猫", seed=0)
    assert magnified.size == (32, 32)  # read at the model's 16 px, doubled by the nine windows
    assert np.array_equal(np.asarray(magnified), np.asarray(double(image, prompt="猫", seed=0)))
    assert double(image, mode="low-level", seed=0).size == (16, 16)  # read at 8 px, drawn at 16
    assert [output.size for output in double([image, image], seed=1)] == [(32, 32)] * 2
    with pytest.raises(ValueError, match="mode must be"):
        double(image, mode="bigger")


def test_image_to_image_refuses_a_text_to_image_model(tiny_model_dir):
    from transformers import pipeline

    with pytest.raises(ValueError, match="super-resolution model"):
        pipeline("image-to-image", model=str(tiny_model_dir))(digit_like(16))


REMOTE_SR = """
import sys
for name in ("configuration_cogview", "processing_cogview", "modeling_cogview", "cogview_tools"):
    sys.modules[name] = None
import PIL.Image
from transformers import pipeline
out = pipeline("image-to-image", model=sys.argv[1], trust_remote_code=True)(PIL.Image.new("RGB", (16, 16), "white"), seed=0)
print(type(out).__name__, out.size)
"""


@pytest.mark.slow
def test_image_to_image_as_remote_code(tiny_sr_model_dir, tmp_path):
    import subprocess
    import sys

    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", REMOTE_SR, str(tiny_sr_model_dir)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("Image (32, 32)")


def test_diffusers_super_resolution_pipeline_and_its_saved_layout(tiny_sr_model_dir, tmp_path):
    import numpy as np
    from diffusers import DiffusionPipeline

    from modeling_cogview import CogViewSuperResolutionPipeline

    pipe = CogViewSuperResolutionPipeline.from_pretrained(tiny_sr_model_dir)
    image = digit_like(16)
    out = pipe(prompt="猫", image=image, generator=torch.Generator().manual_seed(0), progress_bar=False)
    assert out.images[0].size == (32, 32)
    floats = pipe(prompt=["猫", "虎"], image=[image, image], mode="low-level", output_type="np", progress_bar=False).images
    assert floats.shape == (2, 16, 16, 3)
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    again = reloaded(prompt="猫", image=image, generator=torch.Generator().manual_seed(0), progress_bar=False)
    assert type(reloaded).__name__ == "CogViewSuperResolutionPipeline"
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(again.images[0]))


def test_super_resolve_cli_and_the_text_to_image_chain(tiny_model_dir, tiny_sr_model_dir, tmp_path, capsys):
    import PIL.Image

    from cogview_tools.cli import generate, super_resolve

    digit_like(16).save(tmp_path / "digit.png")
    assert super_resolve.main(["--model", str(tiny_sr_model_dir), "--image", str(tmp_path / "digit.png"), "--prompt", "猫",
                               "--output_dir", str(tmp_path / "sr"), "--no_progress"]) == 0  # fmt: skip
    assert PIL.Image.open(tmp_path / "sr" / "digit-2x.png").size == (32, 32)
    assert "16x16" not in capsys.readouterr().err
    assert super_resolve.main(["--model", str(tiny_sr_model_dir), "--image", str(tmp_path / "none.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert generate.main(["--model", str(tiny_model_dir), "--prompt", "猫", "--num_images", "2", "--sr_model", str(tiny_sr_model_dir),
                          "--output_dir", str(tmp_path / "chain"), "--no_progress"]) == 0  # fmt: skip
    assert PIL.Image.open(tmp_path / "chain" / "grid-2x.png").size == (2 * 32, 32)
    assert PIL.Image.open(tmp_path / "chain" / "000-猫-1-2x.png").size == (32, 32)


def test_the_collator_builds_sr_and_magnify_training_sequences(sr_processor):
    from cogview_tools.training import DataCollatorForCogView, magnify_crops

    row = {"codes": list(range(16)), "low_codes": [1, 2, 3, 4], "high_codes": list(range(64)), "text_ids": [70]}
    low_level = DataCollatorForCogView(sr_processor, ["super-resolution"])([row])
    assert low_level["input_ids"][0].tolist() == sr_processor.layout("super-resolution", row["text_ids"], row["low_codes"], target_ids=row["codes"])
    windows = DataCollatorForCogView(sr_processor, ["magnify"], seed=3)([row] * 1)["input_ids"][0].tolist()
    candidates = [sr_processor.layout("super-resolution", row["text_ids"], *magnify_crops(row["codes"], row["high_codes"], w)[:1],
                                      target_ids=magnify_crops(row["codes"], row["high_codes"], w)[1]) for w in range(9)]  # fmt: skip
    assert windows in candidates
    source, target = magnify_crops(row["codes"], row["high_codes"], 8)  # the bottom-right window of a 4x4 grid
    assert source == [10, 11, 14, 15] and target == [36, 37, 38, 39, 44, 45, 46, 47, 52, 53, 54, 55, 60, 61, 62, 63]
