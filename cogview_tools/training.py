"""Training CogView with the transformers Trainer: the project's arguments beside `TrainingArguments` (parsed together
by `HfArgumentParser`), the data collator, and resuming from the last complete checkpoint."""

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from processing_cogview import CogViewProcessor


TASKS = ("text-to-image", "image-to-text", "super-resolution", "magnify")


@dataclass
class CogViewArguments:
    """What a CogView run trains on and from, and what its folder says (every Trainer flag comes from
    `TrainingArguments`)."""

    dataset: str = field(metadata={"help": "tokenize_dataset's output (the dataset folder)"})
    split: str | None = field(default="train", metadata={"help": "rows whose 'split' column has this value (if the column exists)"})
    model: str | None = field(default=None, metadata={"help": "continue from this CogView model folder or Hub id (fine-tuning, LoRA)"})
    vqvae: str | None = field(default=None, metadata={"help": "from scratch: the VQ-VAE folder from train_vqvae"})
    tokenizer: str | None = field(default=None, metadata={"help": "from scratch: the SentencePiece .model file"})
    num_layers: int = field(default=4, metadata={"help": "from scratch: transformer layers"})
    hidden_size: int = field(default=256, metadata={"help": "from scratch: hidden size (the MLP is 4x)"})
    num_heads: int = field(default=8, metadata={"help": "from scratch: attention heads"})
    dropout: float = field(default=0.0, metadata={"help": "from scratch: hidden and attention dropout"})
    extra_positions: int = field(default=8, metadata={"help": "from scratch: positions beyond the longest training sequence"})
    tasks: str = field(default="text-to-image,image-to-text", metadata={"help": "comma-separated: text-to-image, image-to-text, super-resolution (half-size codes to the image's), magnify (a window of the image to the 2x image's); repeat one to weigh it"})
    super_resolution: bool = field(default=False, metadata={"help": "make --model a super-resolution model (its config and processor say so; the release's SR sampling)"})
    text_dropout: float = field(default=0.0, metadata={"help": "fraction of drawing rows (all but captioning) trained without caption: guidance's unconditional twin; SR from the image alone"})
    txt_loss_scale: float | None = field(default=None, metadata={"help": "loss weight of text positions (default: the model's)"})
    lora_r: int = field(default=0, metadata={"help": "> 0: train LoRA adapters on q/k/v/o_proj and fc1/fc2"})
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    merge_lora: bool = field(default=False, metadata={"help": "save the merged model instead of the adapter"})
    gen_top_k: int | None = field(default=None, metadata={"help": "sampling default written to generation_config.json"})
    gen_temperature: float | None = field(default=None, metadata={"help": "sampling default written to generation_config.json"})
    gen_guidance_scale: float | None = field(default=None, metadata={"help": "guidance default written to generation_config.json"})
    gen_rerank_candidates: int | None = field(default=None, metadata={"help": "self-reranking default (candidates per image) written to generation_config.json"})
    gen_caption_length: int | None = field(default=None, metadata={"help": "caption tokens by default (default: the longest training caption)"})
    model_name: str | None = field(default=None, metadata={"help": "the model card's name and repo id"})
    description: str = field(default="", metadata={"help": "a paragraph for the model card"})
    example_prompt: str = "a handwritten digit 7"
    sample_prompts: list[str] | None = field(default=None, metadata={"help": "prompts of the card's sample picture and widget (default: --example_prompt)"})
    no_sample: bool = field(default=False, metadata={"help": "push without drawing the sample picture"})
    dataset_id: str | None = field(default=None, metadata={"help": "the Hub id of the training data, for the card's datasets"})
    base_model_id: str | None = field(default=None, metadata={"help": "the Hub id of --model (the card's base_model; required to push a LoRA adapter)"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "the former flag of --warmup_steps RATIO (a float below 1 is a ratio)"})

    def task_list(self) -> list[str]:
        tasks = [task.strip() for task in self.tasks.split(",") if task.strip()]
        if not tasks or any(task not in TASKS for task in tasks):
            raise ValueError(f"--tasks takes {' and/or '.join(TASKS)}, got {self.tasks!r}")
        return tasks


@dataclass
class CogViewTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of a small CogView run on a CPU (every flag stays the Trainer's)."""

    output_dir: str | None = field(default=None, metadata={"required": True, "help": "the run's folder: checkpoints and the final model"})
    per_device_train_batch_size: int = 32
    max_steps: int = 1000
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = field(default=0.05, metadata={"help": "warmup steps, or a ratio of the steps below 1"})
    weight_decay: float = 0.01
    save_steps: float = 500
    save_total_limit: int | None = 2
    logging_steps: float = 50
    report_to: None | str | list[str] = "none"
    remove_unused_columns: bool = False  # the collator reads codes and text_ids
    dataloader_drop_last: bool = True
    ddp_find_unused_parameters: bool | None = False

    def __post_init__(self):
        # where no accelerator is, say so: a distributed launch then makes a gloo process group (DDP, FSDP on CPU)
        # instead of running each process on its own
        if not torch.accelerator.is_available():
            self.use_cpu = True
        super().__post_init__()


class DataCollatorForCogView:
    """Stored rows (`codes`, `text_ids`) -> right-padded training sequences with labels, in the release layouts. Each
    row becomes a sequence of a task drawn from `tasks` (repeat a task to weigh it): text-to-image, captioning, or for
    a super-resolution model (rows with `low_codes` and `high_codes`, see `cogview_tools.data`) super-resolution
    (the half-size image to the image) and magnify (one of magnify's nine windows: a quarter-size block of the image
    to the matching block of the 2x image, the release's crops). With `text_dropout`, that fraction of the drawing rows
    (all but captioning) loses its caption: for text-to-image this teaches the unconditional `[ROI1] [BASE] [BOI1]`
    that classifier-free guidance compares against; a super-resolution model learns to work from the image alone.

    Every draw is a function of the seed, the epoch and the row itself (its codes and text), not of a random stream:
    a run killed at any point and resumed from a checkpoint collates exactly what the straight run did. The Trainer
    tells the epoch through `EpochCallback`."""

    def __init__(self, processor: CogViewProcessor, tasks: list[str] | tuple[str, ...] = ("text-to-image",), text_dropout: float = 0.0, seed: int = 0):
        if not tasks or any(task not in TASKS for task in tasks):
            raise ValueError(f"tasks must be taken from {TASKS}, got {tasks}")
        self.processor, self.tasks, self.text_dropout, self.seed = processor, list(tasks), text_dropout, seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def draws(self, row: dict) -> random.Random:
        content = np.asarray(row["codes"], np.int64).tobytes() + b"|" + np.asarray(row["text_ids"], np.int64).tobytes()
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:".encode() + content, digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def sequence(self, row: dict) -> list[int]:
        draws = self.draws(row)
        task = draws.choice(self.tasks)
        text_ids = row["text_ids"]
        if task != "image-to-text" and draws.random() < self.text_dropout:
            text_ids = []
        if task == "super-resolution":
            return self.processor.layout(task, text_ids, row["low_codes"], truncation=True, target_ids=row["codes"])
        if task == "magnify":
            source, target = magnify_crops(row["codes"], row["high_codes"], draws.randrange(9))
            return self.processor.layout("super-resolution", text_ids, source, truncation=True, target_ids=target)
        return self.processor.layout(task, text_ids, row["codes"], full=True, truncation=True)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [self.sequence(row) for row in rows]
        batch = self.processor.pad_sequences(sequences, padding_side="right", return_labels=True)
        return {key: torch.tensor(value) for key, value in batch.items()}

    class EpochCallback(TrainerCallback):
        """Tells the collator the epoch the Trainer starts (or resumes)."""

        def __init__(self, collator: "DataCollatorForCogView"):
            self.collator = collator

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.set_epoch(int(state.epoch or 0))


def magnify_crops(codes: list[int], high_codes: list[int], window: int) -> tuple[list[int], list[int]]:
    """Window `window` (0..8: row-major i, j) of magnify's plan on an S x S grid: its S/2 source block of `codes` and
    the full S x S target block of the 2x grid `high_codes` that the window covers."""
    side = math.isqrt(len(codes))
    i, j = divmod(window, 3)
    grid, high = torch.tensor(codes).view(side, side), torch.tensor(high_codes).view(2 * side, 2 * side)
    source = grid[side // 4 * i : side // 4 * i + side // 2, side // 4 * j : side // 4 * j + side // 2]
    target = high[side // 2 * i : side // 2 * i + side, side // 2 * j : side // 2 * j + side]
    return source.reshape(-1).tolist(), target.reshape(-1).tolist()


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer state was written (the Trainer writes it last), so a run killed while
    saving resumes from the checkpoint before."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    complete = []
    for checkpoint in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        state = checkpoint / "trainer_state.json"
        if checkpoint.name.split("-")[-1].isdigit() and state.is_file():
            try:
                json.loads(state.read_text())
            except ValueError:  # cut off while written
                continue
            complete.append(checkpoint)
    return max(complete, key=lambda path: int(path.name.split("-")[-1]), default=None)


__all__ = ["CogViewArguments", "CogViewTrainingArguments", "DataCollatorForCogView", "TASKS", "last_complete_checkpoint"]
