"""The model card of a CogView model: rendered by `huggingface_hub.ModelCard` from the project's `model_card.md` (a
Jinja template that ships inside this package), with a grid of samples the model draws, and the checks that keep this
machine's paths out of a shared repo. `cogview-train` writes the card of every run; `cogview-push` renders it again for
the repo it pushes to, carrying over the text of the folder's card."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import PIL.Image
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .images import image_grid


TEMPLATE_NAME = "model_card.md"
SAMPLES_FILE = "samples.png"
DEFAULT_TAGS = ["cogview", "text-to-image", "image-captioning", "vq-vae"]
SAMPLING_KEYS = ("do_sample", "top_k", "temperature", "guidance_scale", "rerank_candidates", "max_new_tokens")
INTRO = "A CogView model"  # the template's first paragraph: rendered anew, never carried over

# Absolute paths of a machine (a temp folder, a home): they mean nothing elsewhere and tell about the machine. A path
# inside a URL and relative paths do not match.
MACHINE_PATH = re.compile(
    r"(?<![\w:/.~-])/(?:tmp|root|home|work|Users|mnt|scratch|private/var|var/folders)/[^\s\"'`)\],]*"
    r"|\b[A-Za-z]:\\{1,2}Users\\{1,2}[^\s\"'`]*"
)
TEXT_SUFFIXES = (".json", ".md", ".py", ".txt", ".yaml", ".yml", ".jinja")


@dataclass
class CardContent:
    """What a card says beyond the model's own config: where it lives, where it came from, how it was trained and
    measured, and its sample picture."""

    repo_id: str
    description: str = ""
    training: str = "Not recorded."
    base_model: str | None = None
    adapter: bool = False
    datasets: list[str] | None = None
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=lambda: ["en", "zh"])
    tags: list[str] = field(default_factory=list)
    eval_results: list[EvalResult] = field(default_factory=list)
    eval_note: str = ""
    sample_prompts: list[str] = field(default_factory=list)
    sample_image: str | None = None
    sample_caption: str = ""

    @property
    def model_name(self) -> str:
        return self.repo_id.split("/")[-1]


def sampling_summary(generation_config: Any) -> str:
    return ", ".join(f"{key} {getattr(generation_config, key, None)}" for key in SAMPLING_KEYS)


def card_data(content: CardContent, super_resolution: bool = False) -> ModelCardData:
    """The YAML metadata: what the Hub indexes, filters on, and builds its widgets and "Use this model" snippets from.
    A super-resolution model is an image-to-image one."""
    tags = list(DEFAULT_TAGS) if not super_resolution else ["cogview", "image-to-image", "super-resolution", "vq-vae"]
    if content.adapter:
        tags += ["peft", "lora", f"base_model:adapter:{content.base_model}"]
    tags += content.tags
    return ModelCardData(
        library_name="peft" if content.adapter else "transformers",
        pipeline_tag="image-to-image" if super_resolution else "text-to-image",
        license=content.license,
        language=content.language or None,
        tags=list(dict.fromkeys(tags)),
        base_model=content.base_model,
        datasets=content.datasets or None,
        eval_results=content.eval_results or None,
        model_name=content.model_name if content.eval_results else None,
        widget=[{"text": prompt} for prompt in content.sample_prompts] if content.sample_prompts and not super_resolution else None,
        inference=False,  # no Hub inference widget runs a CogView model: the card shows its own pictures instead
    )


def evaluation_rows(results: list[EvalResult]) -> list[dict[str, str]]:
    return [
        {"setting": result.metric_config or "", "metric": result.metric_name or result.metric_type, "value": f"{result.metric_value}"}
        for result in results
    ]


def card_template() -> str:
    """The text of `model_card.md`: the copy built into the installed package (setup.py puts it there), else, in a
    checkout or an editable install, the top-level source file."""
    packaged = resources.files(__package__) / TEMPLATE_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = Path(__file__).resolve().parent.parent / TEMPLATE_NAME
    if source.is_file():
        return source.read_text(encoding="utf-8")
    raise FileNotFoundError(f"the model card template {TEMPLATE_NAME} is missing from the cogview_tools package: reinstall it")


def render_card(content: CardContent, config: Any, generation_config: Any, num_parameters: int) -> ModelCard:
    """The card from `model_card.md`; the model table comes from the config, the sampling line from the generation
    config."""
    downsample = config.vq_config.downsample_factor if getattr(config, "vq_config", None) is not None else 8
    super_resolution = bool(getattr(config, "super_resolution", False))
    example_prompt = content.sample_prompts[0] if content.sample_prompts else "一只可爱的猫"
    return ModelCard.from_template(
        card_data(content, super_resolution),
        template_str=card_template(),
        super_resolution=super_resolution,
        grid2=2 * config.image_grid_size,
        image_size2=2 * config.image_grid_size * downsample,
        model_name=content.model_name,
        repo_id=content.repo_id,
        base_model=content.base_model,
        adapter=content.adapter,
        description=content.description,
        sample_image=content.sample_image,
        sample_caption=content.sample_caption,
        example_prompt=example_prompt.replace('"', '\\"'),
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        parameters=f"{num_parameters:,}",
        image_vocab=config.image_vocab_size,
        text_vocab=config.text_vocab_size,
        image_size=config.image_grid_size * downsample,
        grid=config.image_grid_size,
        eval_rows=evaluation_rows(content.eval_results),
        eval_note=content.eval_note,
        training=content.training,
        sampling=sampling_summary(generation_config),
    )


# -- carrying a card over ---------------------------------------------------------------------------------------


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def card_sections(text: str) -> dict[str, str]:
    """The free text of a card rendered from `model_card.md` that a new rendering keeps: the description (the
    paragraphs after the title and the template's introduction), the training paragraph and the evaluation note."""
    body = text.split("\n---", 1)[1] if text.startswith("---") and "\n---" in text else text
    parts = re.split(r"^## ", body, flags=re.MULTILINE)
    sections = {part.partition("\n")[0].strip(): part.partition("\n")[2] for part in parts[1:]}
    description = [
        paragraph
        for paragraph in _paragraphs(parts[0])
        if not paragraph.startswith(("---", "# ", INTRO, "![", "*", "<"))
    ]
    training = [p for p in _paragraphs(sections.get("Training", "")) if not p.startswith("Sampling defaults")]
    eval_note = [p for p in _paragraphs(sections.get("Evaluation", "")) if not p.startswith("|")]
    return {"description": "\n\n".join(description), "training": "\n\n".join(training), "eval_note": "\n\n".join(eval_note)}


def eval_results_of(card: ModelCard) -> list[EvalResult]:
    return list(getattr(card.data, "eval_results", None) or [])


def widget_prompts(card: ModelCard) -> list[str]:
    widget = card.data.get("widget") or []
    return [entry["text"] for entry in widget if isinstance(entry, dict) and entry.get("text")]


# -- measured quality -------------------------------------------------------------------------------------------


def quality_eval_results(path: str | Path) -> tuple[list[EvalResult], str]:
    """`model-index` entries and a note from a `benchmarks/digits_quality.py` result: the share of drawn digits that a
    classifier recognises as the prompted digit, per sampling setting and prompt language."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("benchmark") != "digits_quality" or "conditional_accuracy" not in data:
        raise ValueError(f"{Path(path).name} is not a result of benchmarks/digits_quality.py (no conditional_accuracy)")
    results = [
        EvalResult(
            task_type="text-to-image",
            task_name="Text-to-image",
            dataset_type="digit-prompts",
            dataset_name="Handwritten digit prompts (en, zh)",
            metric_type="accuracy",
            metric_name=f"digit accuracy ({language} prompts)",
            metric_config=setting,
            metric_value=values["accuracy"],
        )
        for setting, by_language in data["conditional_accuracy"].items()
        for language, values in by_language.items()
    ]
    note = (
        f"Measured by `{data.get('command', 'benchmarks/digits_quality.py')}` ({data.get('machine', 'CPU')}): "
        f"{data.get('samples_per_digit_per_language', '?')} samples per digit and prompt language, each judged by a "
        f"digit classifier that recognises {data.get('classifier_accuracy_on_real_held_out', float('nan')):.1%} of "
        "real held-out digits."
    )
    return results, note


# -- the sample picture -----------------------------------------------------------------------------------------


def draw_samples(model: Any, processor: Any, prompts: list[str], per_prompt: int, candidates: int | None = None, seed: int = 0) -> list[PIL.Image.Image]:
    """`per_prompt` images for each prompt (prompt-major) by the text-to-image pipeline, each the best of `candidates`
    by the model's self-reranking (default: the model's), seeded without disturbing the caller's random state."""
    from transformers import pipeline

    draw = pipeline("text-to-image", model=model, processor=processor)
    drawn = draw(prompts, num_images_per_prompt=per_prompt, rerank_candidates=candidates, seed=seed, progress_bar=False)
    return [output["image"] for outputs in drawn for output in outputs]


def write_samples(
    folder: Path, model: Any, processor: Any, prompts: list[str], per_prompt: int, candidates: int | None = None, seed: int = 0
) -> str:
    """Draws the sample grid into `folder/samples.png`; returns the card's caption for it."""
    from modeling_cogview.generation_cogview import DrawingDefaults

    if candidates is None:
        candidates = DrawingDefaults.from_generation_config(model.generation_config).rerank_candidates
    images = draw_samples(model, processor, prompts, per_prompt, candidates, seed)
    columns = per_prompt if per_prompt > 1 else min(len(images), 5)
    image_grid(images, columns, min_side=96).save(folder / SAMPLES_FILE)
    layout = "one row per prompt" if per_prompt > 1 else "left to right, top to bottom"
    quoted = ", ".join(f'"{prompt}"' for prompt in prompts)
    picked = f"each the best of {candidates} by the model's self-reranking" if candidates > 1 else "one draw each"
    return (
        f"Drawn by this model for {quoted} ({layout}), {per_prompt} per prompt with seed {seed}, its top-k and "
        f"temperature, {picked}."
    )


def samples_per_prompt(prompts: list[str], total: int = 8) -> int:
    """Enough images per prompt that a grid holds about `total`."""
    return max(1, math.ceil(total / max(1, len(prompts))))


# -- nothing of this machine in a shared repo -------------------------------------------------------------------


def machine_paths(text: str) -> list[str]:
    return sorted(set(MACHINE_PATH.findall(text)))


def folder_machine_paths(folder: Path, skip_prefixes: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Text file (relative path) -> the machine paths in it, for every text file under `folder` except those under
    a top-level entry that starts with one of `skip_prefixes` (what an upload leaves out, such as checkpoints)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if skip_prefixes and relative.parts[0].startswith(skip_prefixes):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            hits = machine_paths(path.read_text(encoding="utf-8", errors="replace"))
            if hits:
                found[relative.as_posix()] = hits
    return found


def without_name_or_path(value: Any) -> Any:
    """A config dict without `_name_or_path` at any depth: transformers records where a (sub-)config was loaded
    from, a folder of this machine, and keeps it in nested configs such as `vq_config`."""
    if isinstance(value, dict):
        return {key: without_name_or_path(item) for key, item in value.items() if key != "_name_or_path"}
    if isinstance(value, list):
        return [without_name_or_path(item) for item in value]
    return value


def clean_config_file(path: Path, target: Path | None = None) -> None:
    """Writes `path` (a config JSON) to `target` (default: in place) without `_name_or_path` entries."""
    config = json.loads(path.read_text(encoding="utf-8"))
    (target or path).write_text(json.dumps(without_name_or_path(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "DEFAULT_TAGS",
    "MACHINE_PATH",
    "SAMPLES_FILE",
    "CardContent",
    "card_sections",
    "card_template",
    "clean_config_file",
    "eval_results_of",
    "folder_machine_paths",
    "machine_paths",
    "quality_eval_results",
    "render_card",
    "samples_per_prompt",
    "widget_prompts",
    "without_name_or_path",
    "write_samples",
]
