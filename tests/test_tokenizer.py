"""CogView's tokenizers: the original ids (SentencePiece id + offset, command tokens at release ids), fast == slow."""

import json
import random

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from conftest import GOLDEN
from processing_cogview import CogViewProcessor, CogViewTokenizer, CogViewTokenizerFast


SP_MODEL = str(GOLDEN / "tokenizer" / "cog-pretrain.model")
CASES = json.loads((GOLDEN / "tokenizer_cases.json").read_text())


@pytest.fixture(scope="module")
def slow():
    return CogViewTokenizer(vocab_file=SP_MODEL)


@pytest.fixture(scope="module")
def fast():
    return CogViewTokenizerFast(vocab_file=SP_MODEL)


@pytest.mark.parametrize("kind", ["slow", "fast"])
def test_golden_texts(kind, request):
    tokenizer = request.getfixturevalue(kind)
    for case in CASES["texts"]:
        assert tokenizer(case["text"], add_special_tokens=False)["input_ids"] == case["ids"], case["text"]
        if kind == "slow":  # SentencePiece's own decoding, <unk> as " ⁇ " included
            assert tokenizer.decode(case["ids"]) == case["decoded"][0][0]


@pytest.mark.parametrize("kind", ["slow", "fast"])
def test_command_tokens_at_release_ids(kind, request):
    tokenizer = request.getfixturevalue(kind)
    for name, token_id in CASES["command_tokens"].items():
        assert tokenizer.convert_tokens_to_ids(name) == token_id
        assert tokenizer.convert_ids_to_tokens(token_id) == name
    assert tokenizer.convert_tokens_to_ids("[BOI1]") == 58193
    assert len(tokenizer) == CASES["num_tokens"] == 58219
    assert tokenizer.pad_token_id == 58192
    # command tokens typed in text are recognised; no BOS/EOS is ever added
    ids = tokenizer("[ROI1] 老虎 在 草地上 [BASE] [BOI1]")["input_ids"]
    assert ids == CASES["queries"][1]["ids"]


def test_golden_queries_in_the_original_syntax():
    processor = CogViewProcessor.from_sentencepiece(SP_MODEL, config=_release_config())
    for case in CASES["queries"]:
        assert processor.encode_query(case["query"]) == case["ids"], case["query"]


def _release_config():
    from configuration_cogview import CogViewConfig

    return CogViewConfig(vq_config={})


def random_strings(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [
        [chr(c) for c in range(0x4E00, 0x9FFF)],  # CJK
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-()"),
        ["🐱", "🐶", "😀", "🌸", "👍🏽", "🇨🇳", "é", "ß", "ñ", "Ω", "ＡＢＣ", "１２３", "，", "。", "「", "」"],
        [" ", "  ", "\t", "\n", "\u3000", "<n>", "\u00a0"],
    ]
    strings = []
    for _ in range(count):
        length = rng.randint(0, 25)
        strings.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return strings


def test_fast_equals_slow_on_random_strings(slow, fast):
    texts = random_strings(3000)
    assert slow(texts, add_special_tokens=False)["input_ids"] == fast(texts, add_special_tokens=False)["input_ids"]
    for text in texts[:300]:  # against SentencePiece itself, shifted by the text offset
        expected = [i + 8192 for i in slow.sp_model.encode(text)]
        assert fast(text, add_special_tokens=False)["input_ids"] == expected


def test_image_ids_decode_readably_and_skip(slow, fast):
    ids = [58199, 24147, 14404, 52698, 58208, 58193, 5, 8191]
    for tokenizer in (slow, fast):
        text = tokenizer.decode(ids)
        assert "<image_5>" in text and "<image_8191>" in text and "[BOI1]" in text and "一只可爱的猫" in text
        assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "一只可爱的猫"
    with pytest.raises(ValueError, match="outside"):
        slow.convert_ids_to_tokens([58230])


def test_save_load_and_auto_tokenizer(fast, tmp_path):
    fast.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer.model").is_file()
    text = "一只可爱的猫 on the grass"
    for reloaded in (CogViewTokenizerFast.from_pretrained(tmp_path), CogViewTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert reloaded(text)["input_ids"] == fast(text)["input_ids"]
        assert reloaded.convert_tokens_to_ids("[EOI1]") == 58196


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_any_sentencepiece_model_with_offsets_from_config(tmp_path, model_type):
    """A small model trained on a caption set: ids follow the given image vocabulary size, fast == slow."""
    captions = [f"a handwritten digit {d}" for d in range(10)] + [f"手写数字{d}" for d in range(10)] + ["a photo of a cat", "一只猫"]
    (tmp_path / "captions.txt").write_text("\n".join(captions * 5))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "captions.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=40, hard_vocab_limit=False, model_type=model_type,
        character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    slow = CogViewTokenizer(vocab_file=str(tmp_path / "sp.model"), image_vocab_size=64)
    fast = CogViewTokenizerFast(vocab_file=str(tmp_path / "sp.model"), image_vocab_size=64)
    raw = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    texts = captions + random_strings(300, seed=1)
    assert slow(texts, add_special_tokens=False)["input_ids"] == fast(texts, add_special_tokens=False)["input_ids"]
    assert slow("a handwritten digit 7", add_special_tokens=False)["input_ids"] == [i + 64 for i in raw.encode("a handwritten digit 7")]
    pieces = raw.get_piece_size()
    assert fast.convert_tokens_to_ids("[PAD]") == 64 + pieces and fast.convert_tokens_to_ids("[BOI1]") == 64 + pieces + 1
    assert fast.decode(fast("手写数字7", add_special_tokens=False)["input_ids"]) == "手写数字7"


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
        CogViewTokenizer(vocab_file=str(tmp_path / "nope.model"))
    with pytest.raises(FileNotFoundError, match="tokenizer.json or a SentencePiece"):
        CogViewTokenizerFast(vocab_file=str(tmp_path / "nope.model"))


def test_saved_sentencepiece_model_names_no_folder_of_this_machine(tmp_path):
    """The trainer records its input and output paths in the model; a saved (and so a shared) copy drops them."""
    (tmp_path / "captions.txt").write_text("\n".join([f"a handwritten digit {d}" for d in range(10)] * 5))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "captions.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=30, hard_vocab_limit=False,
        bos_id=-1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    assert str(tmp_path).encode() in (tmp_path / "sp.model").read_bytes()
    for tokenizer_class in (CogViewTokenizer, CogViewTokenizerFast):
        saved = tmp_path / tokenizer_class.__name__
        tokenizer_class(vocab_file=str(tmp_path / "sp.model"), image_vocab_size=64).save_pretrained(saved)
        assert str(tmp_path).encode() not in (saved / "tokenizer.model").read_bytes()
        reloaded = tokenizer_class.from_pretrained(saved)
        assert reloaded("a handwritten digit 7", add_special_tokens=False)["input_ids"] == [
            i + 64 for i in spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model")).encode("a handwritten digit 7")
        ]
