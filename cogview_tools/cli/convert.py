"""Convert a CogView checkpoint of the original release (Megatron/DeepSpeed) or of SwissArmyTransformer, and the
release's VQ-VAE, into a transformers folder (`modeling_cogview.convert_cogview_checkpoint.convert`): streamed, every
size read off the tensors, the folder written only once complete."""

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub.serialization._base import parse_size_to_int

from modeling_cogview.convert_cogview_checkpoint import DEFAULT_MAX_SHARD_SIZE, CheckpointError, convert

from ..hardware import DTYPES


def shard_size(text: str) -> int | str:
    """--max_shard_size: bytes, or a size with a unit as transformers takes it ("2GB", "500MB")."""
    if text.isdigit():
        return int(text)
    try:
        parse_size_to_int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """A plain `kill` (SIGTERM) unwinds like Ctrl-C while converting, so the temporary folder is removed."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="release dir, SwissArmyTransformer dir, or a .pt file")
    parser.add_argument("--output_dir", required=True, help="folder to write the transformers model into")
    parser.add_argument("--num_attention_heads", type=int, default=None, help="default: SAT config, else 40")
    parser.add_argument("--vqvae_path", default=None, help="the release's VQ-VAE state dict (vqvae_hard_biggerset_011.pt)")
    parser.add_argument("--tokenizer_path", default=None, help="SentencePiece model (cog-pretrain.model): writes the processor")
    parser.add_argument("--dtype", choices=[*DTYPES, "auto"], default="auto", help="default: the checkpoint's own dtype (the VQ-VAE stays float32)")
    parser.add_argument("--max_shard_size", type=shard_size, default=DEFAULT_MAX_SHARD_SIZE,
                        help='largest safetensors shard, e.g. "2GB" (default), "500MB" or bytes; a larger tensor gets a shard of its own')  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace output_dir if it exists and is not empty")
    parser.add_argument("--super_resolution", action=argparse.BooleanOptionalAction, default=None,
                        help="the checkpoint is cogview-sr (default: when its folder is named cogview-sr)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        with sigterm_unwinds():
            result = convert(
                args.checkpoint_path, args.output_dir, args.num_attention_heads, args.vqvae_path, args.tokenizer_path, DTYPES.get(args.dtype),
                max_shard_size=args.max_shard_size, overwrite=args.overwrite, progress_bar=True, super_resolution=args.super_resolution,
            )  # fmt: skip
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = result.config
    print(
        f"wrote {args.output_dir}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, vocab {config.vocab_size}, "
        f"VQ-VAE {'yes' if config.vq_config is not None else 'no'}, {'super-resolution, ' if config.super_resolution else ''}"
        f"{result.num_parameters:,} parameters "
        f"in {len(result.weight_files)} file{'s' if len(result.weight_files) > 1 else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
