"""Convert CogView checkpoints of the original release (Megatron/DeepSpeed) or of SwissArmyTransformer, and the
release's VQ-VAE, into a folder that `CogViewForCausalLM.from_pretrained` (and `AutoModelForCausalLM`) loads.

Every dimension is read off the tensors; only the head count is not in the weights (flag, SAT config, or 40).
The conversion streams: the checkpoint is memory-mapped, each tensor is renamed, split and cast on its own, and the
weights are written shard by shard (safetensors, `--max_shard_size`): kept in its dtype, the 7.9 GB release converts
in no more anonymous memory than the imports take (a cast holds one shard's copies). The folder appears at
`--output_dir` only once complete.
"""

import builtins
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import StateDictSplit, split_torch_state_dict_into_shards
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.core_model_loading import revert_weight_conversion
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from configuration_cogview import COMMAND_TOKENS, CogViewConfig, CogViewVQVAEConfig

from .generation_cogview import release_generation_config
from .modeling_cogview import CogViewForCausalLM
from .remote_code import write_remote_code


logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is not what the converter expects; the message says what and how to fix it."""


# DeepSpeed writes RNG states (python tuples, numpy arrays) and sets next to the weights. These are the only
# non-tensor globals we let the unpickler build; anything else is refused (no arbitrary code from a file).
SAFE_CHECKPOINT_GLOBALS = [
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # pickled by numpy 1.x (2021)
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
    np.dtypes.Int64DType,
    np.dtypes.Float64DType,
    builtins.set,
]

DEFAULT_NUM_HEADS = 40  # the only released size: 48 layers x 2560 hidden x 40 heads
RELEASE_IMAGE_VOCAB_SIZE = 8192
RELEASE_TEXT_VOCAB_SIZE = 50000
DEFAULT_MAX_SHARD_SIZE = "2GB"
RELEASE_SR_SEQUENCE_LENGTH = 1345  # cogview-sr's --max-position-embeddings-finetune: 1,089 position rows, longer sequences
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6; the older pickle stream cannot be memory-mapped

LAYER_RENAMES = {
    "input_layernorm": "input_layernorm",
    "third_layernorm": "post_attention_layernorm",
    "post_attention_layernorm": "pre_feedforward_layernorm",
    "fourth_layernorm": "post_feedforward_layernorm",
    "attention.dense": "self_attn.o_proj",
    "mlp.dense_h_to_4h": "mlp.fc1",
    "mlp.dense_4h_to_h": "mlp.fc2",
}
GLOBAL_RENAMES = {
    "word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.word_embeddings.weight": "model.embed_tokens.weight",  # SwissArmyTransformer's name
    "transformer.position_embeddings.weight": "model.embed_positions.weight",
    "transformer.final_layernorm.weight": "model.norm.weight",
    "transformer.final_layernorm.bias": "model.norm.bias",
}
LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def safe_torch_load(path: Path, mmap: bool = True) -> dict:
    """torch.load(weights_only=True) with the allow-list, memory-mapped where the file allows it: the tensors are then
    views of the file (page cache, read as they are used), not copies in RAM."""
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if mmap and not is_zip_checkpoint(path):
        logger.warning("%s is in torch's legacy (pre-1.6) format, which cannot be memory-mapped: loading it whole into RAM", path)
        mmap = False
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # the unpickler's message names the refused global
        raise CheckpointError(f"cannot load {path} safely (weights_only=True): {error}") from error


def is_zip_checkpoint(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def locate_transformer_checkpoint(path: Path) -> tuple[Path, dict]:
    """A release dir, a SAT dir or a .pt file -> (the .pt file, SAT model_config or {})."""
    if path.is_file():
        return path, {}
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    for tracker_name in ("latest_checkpointed_iteration.txt", "latest"):
        tracker = path / tracker_name
        if tracker.is_file():
            iteration = tracker.read_text().strip()
            model_file = path / iteration / "mp_rank_00_model_states.pt"
            sat_config_file = path / "model_config.json"
            sat_config = json.loads(sat_config_file.read_text()) if sat_config_file.is_file() else {}
            if sat_config.get("model_parallel_size", 1) != 1:
                raise CheckpointError("model-parallel checkpoints (model_parallel_size > 1) are not supported")
            return model_file, sat_config
    raise CheckpointError(
        f"{path} holds neither latest_checkpointed_iteration.txt (release layout) nor latest (SwissArmyTransformer)"
    )


def load_transformer_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    model_file, sat_config = locate_transformer_checkpoint(Path(path))
    checkpoint = safe_torch_load(model_file)
    state_dict = checkpoint.get("module", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{model_file} holds no state dict (expected tensors under the 'module' key)")
    return state_dict, sat_config


def _require(state_dict: dict, key: str, where: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"missing key {key!r} in {where}: not a CogView transformer checkpoint")
    return state_dict[key]


def infer_config(
    state_dict: dict[str, torch.Tensor],
    num_attention_heads: int,
    vq_config: CogViewVQVAEConfig | None,
    text_vocab_size: int = RELEASE_TEXT_VOCAB_SIZE,
    super_resolution: bool = False,
) -> CogViewConfig:
    word_key = "word_embeddings.weight" if "word_embeddings.weight" in state_dict else "transformer.word_embeddings.weight"
    vocab_size, hidden_size = _require(state_dict, word_key, "the transformer").shape
    max_positions = _require(state_dict, "transformer.position_embeddings.weight", "the transformer").shape[0]
    layer_ids = {int(m.group(1)) for k in state_dict if (m := LAYER_KEY.match(k))}
    if not layer_ids:
        raise CheckpointError("no transformer.layers.* keys: not a CogView transformer checkpoint")
    num_layers = max(layer_ids) + 1
    intermediate = _require(state_dict, "transformer.layers.0.mlp.dense_h_to_4h.weight", "layer 0").shape[0]
    if hidden_size % num_attention_heads:
        raise CheckpointError(
            f"hidden size {hidden_size} is not divisible by {num_attention_heads} heads: pass the right "
            "--num_attention_heads"
        )
    image_vocab_size = vq_config.num_embeddings if vq_config is not None else RELEASE_IMAGE_VOCAB_SIZE
    needed = image_vocab_size + text_vocab_size + len(COMMAND_TOKENS)
    if needed > vocab_size:
        raise CheckpointError(
            f"the embedding has {vocab_size} rows but {image_vocab_size} image + {text_vocab_size} text + "
            f"{len(COMMAND_TOKENS)} command tokens need {needed}: wrong VQ-VAE or tokenizer for this checkpoint"
        )
    return CogViewConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=max_positions,
        image_vocab_size=image_vocab_size,
        text_vocab_size=text_vocab_size,
        super_resolution=super_resolution,
        max_sequence_length=RELEASE_SR_SEQUENCE_LENGTH if super_resolution else None,
        vq_config=vq_config,
    )


def is_release_super_resolution(checkpoint_path: Path) -> bool:
    """The release's super-resolution model comes as `cogview-sr/` (`cogview-sr.tar`): that name says what it is."""
    folder = checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent.parent
    return folder.name == "cogview-sr"


def convert_transformer_state_dict(state_dict: dict[str, torch.Tensor], config: CogViewConfig) -> dict[str, torch.Tensor]:
    """Release/SAT names -> ours; the fused [Q;K;V] rows are split into q_proj, k_proj, v_proj. Row blocks of a
    contiguous tensor are contiguous views: nothing is copied (a memory-mapped checkpoint stays on disk)."""
    converted = {}
    for key, tensor in state_dict.items():
        if key in GLOBAL_RENAMES:
            converted[GLOBAL_RENAMES[key]] = tensor
            continue
        match = LAYER_KEY.match(key)
        if match is None:
            raise CheckpointError(f"unexpected key {key!r}: not a CogView transformer checkpoint")
        layer, name, kind = match.groups()
        prefix = f"model.layers.{layer}"
        if name == "attention.query_key_value":
            if tensor.shape[0] != 3 * config.hidden_size:
                raise CheckpointError(f"{key} has {tensor.shape[0]} rows, expected 3 x hidden = {3 * config.hidden_size}")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                converted[f"{prefix}.self_attn.{proj}.{kind}"] = part.contiguous()
        elif name in LAYER_RENAMES:
            converted[f"{prefix}.{LAYER_RENAMES[name]}.{kind}"] = tensor
        else:
            raise CheckpointError(f"unexpected key {key!r}: not a CogView transformer checkpoint")
    return converted


def load_vqvae_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state_dict = safe_torch_load(Path(path))
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def infer_vq_config(state_dict: dict[str, torch.Tensor]) -> CogViewVQVAEConfig:
    codebook = _require(state_dict, "quantize_t.embed", "the VQ-VAE")
    encoder_convs = sorted(
        int(m.group(1)) for k in state_dict if (m := re.match(r"enc_b\.blocks\.(\d+)\.weight$", k))
    )
    if encoder_convs != list(range(0, 2 * len(encoder_convs), 2)):
        raise CheckpointError(
            f"VQ-VAE encoder layers at {encoder_convs}: only the release's simple layout (conv/ReLU stages, "
            "no residual blocks) is supported"
        )
    first = state_dict[f"enc_b.blocks.{encoder_convs[0]}.weight"]
    return CogViewVQVAEConfig(
        in_channels=first.shape[1],
        hidden_channels=first.shape[0],
        embed_dim=codebook.shape[0],
        num_embeddings=codebook.shape[1],
        num_downsamples=len(encoder_convs) - 1,
    )


def convert_vqvae_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """enc_b/dec Sequentials keep their indices; the [dim, n] codebook buffer becomes an [n, dim] embedding.
    The EMA statistics (cluster_size, embed_avg) only matter for training and are dropped."""
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith("enc_b.blocks."):
            converted["vqvae.encoder." + key.removeprefix("enc_b.blocks.")] = tensor
        elif key.startswith("dec.blocks."):
            converted["vqvae.decoder." + key.removeprefix("dec.blocks.")] = tensor
        elif key == "quantize_t.embed":
            converted["vqvae.quantizer.embedding.weight"] = tensor.t().contiguous()
        elif key not in ("quantize_t.cluster_size", "quantize_t.embed_avg"):
            raise CheckpointError(f"unexpected VQ-VAE key {key!r}")
    return converted


def stored_name(model_key: str) -> str:
    """A weight's name in a folder: the base model's VQ-VAE is stored as `vqvae.*`, which the model maps to
    `model.vqvae.*` at load (and back at save)."""
    return model_key.removeprefix("model.") if model_key.startswith("model.vqvae.") else model_key


def model_name(stored_key: str) -> str:
    """The inverse of `stored_name`."""
    return f"model.{stored_key}" if stored_key.startswith("vqvae.") else stored_key


def check_fits(model: CogViewForCausalLM, weights: dict[str, torch.Tensor]):
    """Every tensor the model has (but the tied lm_head), of its shape, and nothing else (names as stored)."""
    expected = {stored_name(k): v.shape for k, v in model.state_dict().items() if k not in model._tied_weights_keys}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [f"{k}: {tuple(weights[k].shape)} vs {tuple(s)}" for k, s in expected.items() if k in weights and weights[k].shape != s]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            "checkpoint does not fit the inferred architecture: "
            + "; ".join(f"{what}: {items[:5]}" for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)) if items)
        )


def target_dtypes(weights: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    """`dtype` (default: the checkpoint's own) for the transformer; the VQ-VAE stays in fp32 (_keep_in_fp32_modules):
    half precision can flip nearest-code choices."""
    transformer_dtype = dtype or weights["model.embed_tokens.weight"].dtype
    return {k: torch.float32 if k.startswith("vqvae.") else transformer_dtype for k in weights}


def build_model(config: CogViewConfig, state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None) -> CogViewForCausalLM:
    """The converted weights as a model in RAM (the conversion itself streams to disk instead; see `convert`)."""
    with torch.device("meta"):
        model = CogViewForCausalLM(config)
    check_fits(model, state_dict)
    dtypes = target_dtypes(state_dict, dtype)
    model.load_state_dict({model_name(k): v.to(dtypes[k]) for k, v in state_dict.items()}, strict=False, assign=True)
    model.tie_weights()
    model.config.dtype = dtypes["model.embed_tokens.weight"]
    return model.eval()


def plan_shards(
    model: CogViewForCausalLM, weights: dict[str, torch.Tensor], dtypes: dict[str, torch.dtype], max_shard_size: int | str
) -> StateDictSplit:
    """The shards save_pretrained would write (huggingface_hub's greedy split, same file names, in the order and with
    the names save_pretrained's own conversion gives the model's weights), planned from shapes and dtypes alone: meta
    tensors stand in for the data."""
    stored = {k: stored_name(k) for k in model.state_dict() if stored_name(k) in weights}
    planned = {k: torch.empty(weights[name].shape, dtype=dtypes[name], device="meta") for k, name in stored.items()}
    return split_torch_state_dict_into_shards(
        revert_weight_conversion(model, planned),
        filename_pattern=SAFE_WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors"),
        max_shard_size=max_shard_size,
    )


def write_weights(
    folder: Path,
    weights: dict[str, torch.Tensor],
    dtypes: dict[str, torch.dtype],
    split: StateDictSplit,
    num_parameters: int,
    progress_bar: bool,
):
    """One shard at a time: a tensor that needs no cast is written straight from the mapped file, a cast one is copied,
    so at most one shard's copies are in RAM. The index is the one save_pretrained writes."""
    bar = tqdm(total=len(split.tensor_to_filename), desc="converting", unit="tensor", disable=not progress_bar)
    for filename, keys in split.filename_to_tensors.items():
        bar.set_postfix_str(filename)
        shard = {key: weights[key].to(dtypes[key]).contiguous() for key in keys}
        save_file(shard, folder / filename, metadata={"format": "pt"})
        del shard
        bar.update(len(keys))
    bar.close()
    if split.is_sharded:
        index = {"metadata": {"total_parameters": num_parameters, **split.metadata}, "weight_map": split.tensor_to_filename}
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_config_and_code(model: CogViewForCausalLM, folder: Path, dtype: torch.dtype):
    """What save_pretrained writes besides the weights: config.json (weights' dtype, architectures, auto_map),
    generation_config.json and the remote-code bundle."""
    model.config.dtype = dtype
    model.config.architectures = [type(model).__name__]
    custom_object_save(model, folder, config=model.config)  # auto_map; the bundle below replaces the copied files
    model.config.save_pretrained(folder)
    release_generation_config(model.config).save_pretrained(folder)
    write_remote_code(folder)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_output_dir(output_dir: Path, overwrite: bool):
    if output_dir.exists() and not overwrite and not is_empty_dir(output_dir):
        raise CheckpointError(f"{output_dir} exists and is not empty: pass --overwrite to replace it")


@contextmanager
def atomic_output_dir(output_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside `output_dir` that is renamed to it once complete, so a killed conversion never leaves
    a folder that looks converted. On an error (or Ctrl-C) the temporary folder is removed; a SIGKILL leaves it as
    `.tmp-<name>-<random>`."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = output_dir.parent / f".tmp-{output_dir.name}-{secrets.token_hex(4)}"
    temp_dir.mkdir()  # mkdir, not mkdtemp: the folder keeps the umask's permissions, not 0700
    try:
        yield temp_dir
        replace_dir(temp_dir, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path, overwrite: bool):
    """rename(2) is atomic and replaces an empty folder; a non-empty one is first moved aside, then deleted."""
    check_output_dir(target, overwrite)  # again: something may have been written there meanwhile
    if not target.exists() or is_empty_dir(target):
        os.replace(new, target)
        return
    old = new.with_name(new.name + "-old")
    os.replace(target, old)
    os.replace(new, target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


@dataclass
class Conversion:
    """What `convert` wrote: the folder, its config, the parameter count and the weight files."""

    output_dir: Path
    config: CogViewConfig
    num_parameters: int
    weight_files: list[str]


def convert(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    num_attention_heads: int | None = None,
    vqvae_path: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress_bar: bool = False,
    super_resolution: bool | None = None,
) -> Conversion:
    """`super_resolution`: the checkpoint is `cogview-sr` (its folder named so says it when this is None), whose config
    then says so and whose longest sequence is the release's 1,345 tokens."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    state_dict, sat_config = load_transformer_state_dict(Path(checkpoint_path))
    heads = num_attention_heads or sat_config.get("num_attention_heads") or DEFAULT_NUM_HEADS
    vq_config, weights = None, {}
    if vqvae_path is not None:
        vq_state_dict = load_vqvae_state_dict(Path(vqvae_path))
        vq_config = infer_vq_config(vq_state_dict)
        weights.update(convert_vqvae_state_dict(vq_state_dict))
    text_vocab_size = RELEASE_TEXT_VOCAB_SIZE
    if tokenizer_path is not None:
        import sentencepiece  # only needed here

        text_vocab_size = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_path)).get_piece_size()
    if super_resolution is None:
        super_resolution = is_release_super_resolution(Path(checkpoint_path))
    config = infer_config(state_dict, heads, vq_config, text_vocab_size, super_resolution)
    weights.update(convert_transformer_state_dict(state_dict, config))
    with torch.device("meta"):  # the architecture without its weights: key order, shapes, config and code to save
        model = CogViewForCausalLM(config)
    check_fits(model, weights)
    dtypes = target_dtypes(weights, dtype)
    split = plan_shards(model, weights, dtypes, max_shard_size)
    with atomic_output_dir(output_dir, overwrite) as folder:
        write_weights(folder, weights, dtypes, split, model.num_parameters(), progress_bar)
        write_config_and_code(model, folder, dtypes["model.embed_tokens.weight"])
        if tokenizer_path is not None:
            from processing_cogview import CogViewProcessor

            CogViewProcessor.from_sentencepiece(tokenizer_path, config).save_pretrained(folder)
    return Conversion(output_dir, model.config, model.num_parameters(), list(split.filename_to_tensors))
