"""Where and how the command-line programs run a model: device, precision, attention kernel (shared flags), and which
model folder they use when none is given."""

import argparse
import sys
from pathlib import Path

import torch

from modeling_cogview import CogViewForCausalLM
from processing_cogview import CogViewProcessor


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BUNDLED_MODEL = Path("models") / "cogview-digits"


def bundled_model_folder(name: Path = BUNDLED_MODEL) -> Path | None:
    """The repository's bundled model (`models/...`): beside the package in a checkout or an editable install,
    beside the `scripts/` program that runs, or under the current folder. None where there is no checkout."""
    places = [Path(__file__).resolve().parent.parent, Path(sys.argv[0]).resolve().parent.parent, Path.cwd()]
    return next((place / name for place in places if (place / name / "config.json").is_file()), None)


def model_source(value: str) -> str:
    """--model: a folder, or a Hub repo id (`NAMESPACE/NAME`); a path that names no folder is refused at once."""
    looks_like_repo_id = value.count("/") <= 1 and not value.startswith((".", "/", "~"))
    if not Path(value).is_dir() and not looks_like_repo_id:
        raise argparse.ArgumentTypeError(f"model folder not found: {value}")
    return value


def add_model_argument(parser: argparse.ArgumentParser, name: Path = BUNDLED_MODEL):
    default = bundled_model_folder(name)
    where = f"default: the bundled {name}" if default else f"required here: the repository's {name} is not beside this install"
    parser.add_argument("--model", type=model_source, default=str(default) if default else None, required=default is None,
                        help=f"a model folder or Hub repo id ({where})")  # fmt: skip


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


__all__ = [
    "BUNDLED_MODEL",
    "DTYPES",
    "add_hardware_arguments",
    "add_model_argument",
    "bundled_model_folder",
    "load_model_and_processor",
    "resolve_device",
    "resolve_dtype",
]
