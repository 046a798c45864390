"""Push a CogView model folder to the Hugging Face Hub, in one commit: the weights (safetensors), config.json,
generation_config.json, the processor and tokenizer files, the remote-code bundle (so the repo loads with
`trust_remote_code=True` where the cogview package is not installed), a grid of samples the model draws and a model
card rendered from model_card.md (metadata, the picture, usage, training details, measured quality).

The folder is never changed: the files are staged in a temporary folder (weights hard-linked), with the card and
the picture written there, config.json without `_name_or_path`, and nothing that names a folder of this machine.
The token comes from --token, else HF_TOKEN, else the saved login (`hf auth login`); the Hub from HF_ENDPOINT.
Exit code 2 with a one-line message for a missing or refused token, an invalid repo id, a folder that is not a
CogView model, and a failed upload."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..hub import (
    PushError,
    check_no_machine_paths,
    check_repo_id,
    describe_error,
    full_repo_id,
    resolve_token,
    shared_files,
    stage_files,
    upload_staged,
    weight_files,
)


# The project's modules (and with them torch and transformers) are imported in the functions that use them, so a
# missing token, a bad repo id or a wrong folder is answered in a second.

PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAMPLE_IMAGES = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the model folder (save_pretrained of the model and its processor)")
    parser.add_argument("--repo_id", required=True, help="NAMESPACE/NAME on the Hub (NAME alone: the token's user)")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", default=None, help="push to this branch (created from main when missing)")
    parser.add_argument("--commit_message", default=None, help="default: 'Upload CogView model NAME'")
    parser.add_argument("--token", default=None, help="a Hub token with write access (default: HF_TOKEN, else the saved login)")
    card = parser.add_argument_group("model card")
    card.add_argument("--sample_prompts", nargs="+", default=None,
                      help="prompts of the sample picture (default: the card's widget prompts, else its example prompt)")
    card.add_argument("--sample_candidates", type=int, default=None,
                      help="self-reranking candidates per sample (default: the model's generation_config rerank_candidates)")
    card.add_argument("--seed", type=int, default=0, help="seed of the sample picture")
    card.add_argument("--no_sample", action="store_true", help="push without a sample picture")
    card.add_argument("--quality_json", default=None,
                      help="a benchmarks/digits_quality.py result: the card's model-index and Evaluation table")
    card.add_argument("--base_model", default=None, help="the Hub id this model was fine-tuned from (card metadata)")
    card.add_argument("--datasets", nargs="+", default=None, help="Hub ids of the training data (card metadata)")
    card.add_argument("--license", default=None, help="default: the folder's card, else apache-2.0")
    card.add_argument("--description", default=None, help="a paragraph for the card (default: the folder's card)")
    args = parser.parse_args(argv)
    if args.sample_candidates is not None and args.sample_candidates < 1:
        parser.error("--sample_candidates must be at least 1")
    return args


# -- checks before anything is loaded or sent ------------------------------------------------------------------


def check_model_folder(folder: Path) -> None:
    """A PushError that names everything missing when `folder` is not a CogView model (files and config.json only:
    nothing is imported, so a wrong folder answers at once)."""
    if not folder.is_dir():
        raise PushError(f"model folder not found: {folder}")
    present = {path.name for path in folder.iterdir() if path.is_file()}
    if "config.json" not in present and "adapter_config.json" in present:
        raise PushError(
            f"{folder} holds a PEFT adapter, not a CogView model: push it with `cogview-train --push_to_hub` "
            "(its card names the base model), or merge it first (`cogview-train --merge_lora`)"
        )
    missing = []
    if "config.json" not in present:
        missing.append("config.json")
    else:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except ValueError as error:
            raise PushError(f"{folder / 'config.json'} is not valid JSON: {error}") from None
        if config.get("model_type") != "cogview":
            raise PushError(f"{folder} is not a CogView model: config.json has model_type {config.get('model_type')!r}, not 'cogview'")
        if "AutoModelForCausalLM" not in (config.get("auto_map") or {}):
            missing.append("the remote-code auto_map in config.json (re-save with save_pretrained)")
    missing += [shard for shard in weight_files(folder) if shard not in present]
    if not {"model.safetensors", "model.safetensors.index.json"} & present:
        pickled = [name for name in PICKLED_WEIGHTS if name in present]
        hint = f" (found {pickled[0]}: re-save with save_pretrained to get safetensors)" if pickled else ""
        missing.append(f"model.safetensors{hint}")
    if "processor_config.json" not in present:
        missing.append("processor_config.json (the processor: save it with CogViewProcessor.save_pretrained)")
    if "tokenizer_config.json" not in present:
        missing.append("tokenizer_config.json")
    if not {"tokenizer.json", "tokenizer.model"} & present:
        missing.append("tokenizer.json or tokenizer.model")
    if missing:
        raise PushError(f"{folder} is not a complete CogView model folder: missing {', '.join(missing)}")


def example_prompt(card_text: str) -> str | None:
    """The prompt of the card's usage snippet (`processor(text=["..."])`)."""
    match = re.search(r'processor\(text=\["((?:[^"\\]|\\.)*)"\]', card_text)
    return match.group(1) if match else None


def sample_prompts(args: argparse.Namespace, existing: ModelCard | None) -> list[str]:
    from ..model_card import widget_prompts

    if args.sample_prompts:
        return args.sample_prompts
    if existing is not None:
        prompts = widget_prompts(existing) or [p for p in [example_prompt(existing.text)] if p]
        if prompts:
            return prompts
    return []


def redact_machine_paths(text: str, what: str) -> str:
    """Text carried over from the folder's card, with each machine path cut to its last part (a folder name tells
    the reader what it was; the machine's layout is nobody's business)."""
    from ..model_card import MACHINE_PATH

    def last_part(match: re.Match) -> str:
        return Path(match.group(0).rstrip("/\\")).name or "."

    redacted = MACHINE_PATH.sub(last_part, text)
    if redacted != text:
        print(f"note: machine paths in the folder's {what} were shortened to their last part", file=sys.stderr)
    return redacted


def listed(value: object) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def card_base_model(args: argparse.Namespace, existing: ModelCard | None) -> str | None:
    base_model = args.base_model or (existing.data.get("base_model") if existing is not None else None)
    if isinstance(base_model, list):
        base_model = base_model[0] if base_model else None
    if base_model is None:
        return None
    try:
        validate_repo_id(base_model)
    except HFValidationError:
        raise PushError(f"the card's base_model {base_model!r} is not a Hub repo id: pass --base_model ID") from None
    return base_model


def training_from_metrics(folder: Path) -> str | None:
    metrics_file = folder / "train_metrics.json"
    if not metrics_file.is_file():
        return None
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return (
        f"{metrics.get('steps', '?')} steps; final training loss {metrics.get('train_loss', float('nan')):.4f}, "
        f"{metrics.get('train_seconds', 0):.0f} s on {metrics.get('device', 'unknown hardware')} "
        f"({metrics.get('rows', '?')} training rows)."
    )


def write_card_and_samples(args: argparse.Namespace, repo_id: str, folder: Path, staging: Path) -> None:
    """README.md (and samples.png) in `staging`: the folder's card rendered again for `repo_id`."""
    from modeling_cogview import CogViewForCausalLM
    from modeling_cogview.generation_cogview import DrawingDefaults
    from processing_cogview import CogViewProcessor

    from ..model_card import (
        DEFAULT_TAGS,
        SAMPLES_FILE,
        CardContent,
        card_sections,
        eval_results_of,
        quality_eval_results,
        render_card,
        samples_per_prompt,
        write_samples,
    )

    card_file = folder / "README.md"
    existing = ModelCard.load(card_file, ignore_metadata_errors=True) if card_file.is_file() else None
    sections = card_sections(existing.text) if existing is not None else {}
    prompts = sample_prompts(args, existing)
    if not prompts and not args.no_sample and not json.loads((folder / "config.json").read_text()).get("super_resolution"):
        raise PushError("no prompts for the sample picture: pass --sample_prompts (or --no_sample)")
    if args.quality_json:
        try:
            eval_results, eval_note = quality_eval_results(args.quality_json)
        except (OSError, ValueError, KeyError) as error:
            raise PushError(f"cannot read --quality_json: {error}") from None
    else:
        eval_results = eval_results_of(existing) if existing is not None else []
        eval_note = sections.get("eval_note", "")
    data = existing.data if existing is not None else None
    content = CardContent(
        repo_id=repo_id,
        description=args.description or redact_machine_paths(sections.get("description", ""), "card"),
        training=redact_machine_paths(sections.get("training") or training_from_metrics(folder) or "Not recorded.", "card"),
        base_model=card_base_model(args, existing),
        datasets=args.datasets or listed(data.get("datasets") if data else None) or None,
        license=args.license or (data.get("license") if data else None) or "apache-2.0",
        language=listed(data.get("language") if data else None) or ["en", "zh"],
        tags=[tag for tag in listed(data.get("tags") if data else None) if tag not in DEFAULT_TAGS],
        eval_results=eval_results,
        eval_note=eval_note,
        sample_prompts=prompts,
    )

    try:
        model = CogViewForCausalLM.from_pretrained(folder).eval()
        processor = CogViewProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise PushError(f"{folder} does not load as a CogView model: {error}") from None
    if not args.no_sample and not model.config.super_resolution:  # an SR model's picture would need input images
        candidates = args.sample_candidates or DrawingDefaults.from_generation_config(model.generation_config).rerank_candidates
        per_prompt = samples_per_prompt(prompts, SAMPLE_IMAGES)
        print(f"drawing {per_prompt * len(prompts)} samples (best of {candidates} each) for the card")
        content.sample_caption = write_samples(staging, model, processor, prompts, per_prompt, candidates, args.seed)
        content.sample_image = SAMPLES_FILE
    render_card(content, model.config, model.generation_config, model.num_parameters()).save(staging / "README.md")


def push(args: argparse.Namespace) -> str:
    """Everything local first (checks, the staged files, the card and its picture), then the repo and one commit."""
    token = resolve_token(args.token)
    check_repo_id(args.repo_id)
    folder = Path(args.model)
    check_model_folder(folder)
    api = HfApi(token=token)
    repo_id = full_repo_id(api, args.repo_id)
    with tempfile.TemporaryDirectory(prefix="cogview-push-") as staging_dir:
        staging = Path(staging_dir)
        stage_files(folder, shared_files(folder, with_card=False), staging)
        write_card_and_samples(args, repo_id, folder, staging)
        check_no_machine_paths(staging)
        pushed = sorted(path.name for path in staging.iterdir())
        message = args.commit_message or f"Upload CogView model {repo_id.split('/')[-1]}"
        url = upload_staged(api, repo_id, staging, message, private=args.private, revision=args.revision)
    print(f"pushed {len(pushed)} files to {repo_id}{'@' + args.revision if args.revision else ''}: {', '.join(pushed)}")
    return url


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        url = push(args)
    except Exception as error:  # noqa: BLE001 - whatever failed, the user gets one line and exit code 2
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
