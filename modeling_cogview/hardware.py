"""Where and how the command-line programs run a model: device, precision, attention kernel (shared flags)."""

import argparse

import torch

from processing_cogview import CogViewProcessor

from .modeling_cogview import CogViewForCausalLM


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_hardware_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=[*DTYPES, "auto"], default="auto",
                        help="weights' precision (default: bfloat16 on a GPU that supports it, else float16 there; "
                        "float32 on CPU); the VQ-VAE always stays float32")  # fmt: skip
    parser.add_argument("--attn_implementation", default=None, help="sdpa (default), eager, flash_attention_2, flex_attention, ...")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model_and_processor(folder: str, args: argparse.Namespace) -> tuple[CogViewForCausalLM, CogViewProcessor]:
    device = resolve_device(args.device)
    options = {"dtype": resolve_dtype(args.dtype, device)}
    if args.attn_implementation:
        options["attn_implementation"] = args.attn_implementation
    model = CogViewForCausalLM.from_pretrained(folder, **options).to(device).eval()
    return model, CogViewProcessor.from_pretrained(folder)


__all__ = ["add_hardware_arguments", "load_model_and_processor", "resolve_device", "resolve_dtype"]
