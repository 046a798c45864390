"""CogView's tokenizers: ids ARE the model's ids.

Layout (from the model config): image codes at `[0, image_vocab_size)`, SentencePiece piece `p` at
`image_vocab_size + p`, then the 27 command tokens (`[PAD]`, `[BOI1]`, `[ROI1]`, `[BASE]`, ...) as special tokens.
No BOS/EOS is ever added (CogView has none). Image ids decode as `<image_N>`; `skip_special_tokens` drops them.
"""

import json
import os
import re
import shutil

import sentencepiece as spm
from tokenizers import AddedToken as FastAddedToken
from tokenizers import Tokenizer
from transformers.tokenization_python import PreTrainedTokenizer
from transformers.tokenization_utils_base import AddedToken
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from .configuration_cogview import COMMAND_TOKENS


VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}
IMAGE_TOKEN = re.compile(r"<image_(\d+)>")


def image_token(code: int) -> str:
    return f"<image_{code}>"


def command_tokens_decoder(command_token_offset: int) -> dict[int, AddedToken]:
    return {
        command_token_offset + i: AddedToken(name, special=True, normalized=False, lstrip=False, rstrip=False)
        for i, name in enumerate(COMMAND_TOKENS)
    }


class SkipImageTokensMixin:
    """`skip_special_tokens` also drops image ids (they are not special tokens: 8192 of them would bloat the list)."""

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if skip_special_tokens:
            token_ids = [i for i in token_ids if i >= self.image_vocab_size]
        return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)


class CogViewTokenizer(SkipImageTokensMixin, PreTrainedTokenizer):
    """SentencePiece (the `sentencepiece` package only) with CogView's id offsets and command tokens."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # prompts are continued by generate

    def __init__(self, vocab_file: str, image_vocab_size: int = 8192, pad_token="[PAD]", unk_token="<unk>", **kwargs):
        if not vocab_file or not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"SentencePiece model not found: {vocab_file!r} (a tokenizer.model file is needed)")
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        self.image_vocab_size = image_vocab_size
        self.text_vocab_size = self.sp_model.get_piece_size()
        kwargs["added_tokens_decoder"] = command_tokens_decoder(image_vocab_size + self.text_vocab_size)
        kwargs.setdefault("special_tokens_pattern", "none")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs["extra_special_tokens"] = list(COMMAND_TOKENS)  # so skip_special_tokens drops them
        super().__init__(pad_token=pad_token, unk_token=unk_token, image_vocab_size=image_vocab_size, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.image_vocab_size + self.text_vocab_size

    def get_vocab(self) -> dict[str, int]:
        vocab = {image_token(i): i for i in range(self.image_vocab_size)}
        offset = self.image_vocab_size
        vocab.update({self.sp_model.id_to_piece(i): i + offset for i in range(self.text_vocab_size)})
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        if (match := IMAGE_TOKEN.fullmatch(token)) and int(match.group(1)) < self.image_vocab_size:
            return int(match.group(1))
        return self.sp_model.piece_to_id(token) + self.image_vocab_size  # unknown pieces: <unk>

    def _convert_id_to_token(self, index: int) -> str:
        if 0 <= index < self.image_vocab_size:
            return image_token(index)
        if index < self.vocab_size:
            return self.sp_model.id_to_piece(index - self.image_vocab_size)
        raise ValueError(f"id {index} is outside this tokenizer's vocabulary (0..{len(self) - 1})")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Runs of text pieces (<unk> included) decode through SentencePiece; image and command tokens stay as they
        are."""
        out, pieces = [], []
        for token in tokens:
            if token in COMMAND_TOKENS or IMAGE_TOKEN.fullmatch(token):
                out.append(self.sp_model.decode_pieces(pieces))
                out.append(token)
                pieces = []
            else:
                pieces.append(token)
        out.append(self.sp_model.decode_pieces(pieces))
        return "".join(out)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        out_file = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"])
        if os.path.abspath(self.vocab_file) != os.path.abspath(out_file):
            shutil.copyfile(self.vocab_file, out_file)
        return (out_file,)


def build_fast_backend(vocab_file: str, image_vocab_size: int) -> Tokenizer:
    """A `tokenizers` pipeline that encodes like SentencePiece (transformers' own SPM conversion, which follows the
    model's normalizer spec), with every piece id shifted by `image_vocab_size` and the image and command tokens
    placed at their ids."""
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(vocab_file, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type not in (1, 2):
        raise ValueError(f"{vocab_file}: only BPE and unigram SentencePiece models are supported")
    if proto.trainer_spec.model_type == 2:
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = json.loads(SpmConverter.build_tokenizer_from_spm_proto(proto, vocab).to_str())

    model = backend["model"]
    if model["type"] == "BPE":
        model["vocab"] = {
            **{image_token(i): i for i in range(image_vocab_size)},
            **{piece: i + image_vocab_size for piece, i in model["vocab"].items()},
        }
    else:  # unigram ids are positions in its list: put the image tokens first, never chosen (score -inf-ish)
        model["vocab"] = [[image_token(i), -1e9] for i in range(image_vocab_size)] + model["vocab"]
        model["unk_id"] += image_vocab_size
    command_offset = image_vocab_size + len(proto.pieces)
    backend["added_tokens"] = []
    tokenizer = Tokenizer.from_str(json.dumps(backend))
    tokenizer.add_special_tokens([FastAddedToken(name, special=True, normalized=False) for name in COMMAND_TOKENS])
    for i, name in enumerate(COMMAND_TOKENS):
        if tokenizer.token_to_id(name) != command_offset + i:
            raise RuntimeError(f"command token {name} landed at {tokenizer.token_to_id(name)}, not {command_offset + i}")
    return tokenizer


class CogViewTokenizerFast(SkipImageTokensMixin, TokenizersBackend):
    """The same ids as `CogViewTokenizer`, from the `tokenizers` library (built from the SentencePiece model the
    first time, then saved and reloaded as `tokenizer.json`)."""

    vocab_files_names = {**VOCAB_FILES_NAMES, "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"
    slow_tokenizer_class = CogViewTokenizer

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        image_vocab_size: int = 8192,
        pad_token="[PAD]",
        unk_token="<unk>",
        **kwargs,
    ):
        if tokenizer_file is None or not os.path.isfile(tokenizer_file):
            if not vocab_file or not os.path.isfile(vocab_file):
                raise FileNotFoundError("CogViewTokenizerFast needs tokenizer.json or a SentencePiece tokenizer.model")
            kwargs["tokenizer_object"] = build_fast_backend(vocab_file, image_vocab_size)
        self.image_vocab_size = image_vocab_size
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("added_tokens_decoder", None)  # the backend holds the command tokens at their ids
        super().__init__(
            vocab_file=vocab_file,
            tokenizer_file=tokenizer_file,
            pad_token=pad_token,
            unk_token=unk_token,
            image_vocab_size=image_vocab_size,
            **kwargs,
        )

    @classmethod
    def convert_to_native_format(cls, trust_remote_code=False, **kwargs):
        return kwargs  # __init__ loads tokenizer.json itself, or builds it from the SentencePiece model

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # keep the SentencePiece model beside tokenizer.json so the slow tokenizer loads from the same folder
        if self.vocab_file and os.path.isfile(self.vocab_file):
            out_file = os.path.join(str(save_directory), (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"])
            if os.path.abspath(self.vocab_file) != os.path.abspath(out_file):
                shutil.copyfile(self.vocab_file, out_file)
            file_names = file_names + (out_file,)
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)


__all__ = ["CogViewTokenizer", "CogViewTokenizerFast"]
