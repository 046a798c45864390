#!/usr/bin/env python
"""Train CogView with the transformers Trainer on data from tokenize_dataset.py: from scratch (a VQ-VAE from
train_vqvae.py + a SentencePiece model + transformer sizes) or from a checkpoint, optionally with LoRA (PEFT).
Runs unchanged under `accelerate launch`; resumes from the last checkpoint in --output_dir. The result loads with
`from_pretrained` and the pipelines, with its processor and a model card; `--push_to_hub --hub_model_id ID` pushes it
(a LoRA run: the PEFT adapter, its card naming the base model) through TrainingArguments' Hub arguments."""

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its HTTPError is the base of the Hub's errors and of a dropped connection
import torch
from datasets import load_from_disk
from huggingface_hub import get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM, CogViewVQVAE
from modeling_cogview.generation_cogview import release_generation_config
from modeling_cogview.model_card import (
    SAMPLES_FILE,
    CardContent,
    clean_config_file,
    folder_machine_paths,
    render_card,
    samples_per_prompt,
    write_samples,
)
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizerFast


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


class CogViewCollator:
    """Stored rows (codes, text_ids) -> right-padded training sequences with labels, in the release layouts: each
    row becomes a text-to-image or a captioning sequence, drawn from `tasks` (repeat a task to weigh it). With
    `text_dropout`, that fraction of text-to-image rows loses its caption, which teaches the unconditional
    `[ROI1] [BASE] [BOI1]` that classifier-free guidance compares against."""

    def __init__(self, processor: CogViewProcessor, tasks: list[str], text_dropout: float = 0.0, seed: int = 0):
        self.processor, self.tasks, self.text_dropout, self.random = processor, tasks, text_dropout, random.Random(seed)

    def sequence(self, row: dict) -> list[int]:
        task = self.random.choice(self.tasks)
        text_ids = row["text_ids"]
        if task == "text-to-image" and self.random.random() < self.text_dropout:
            text_ids = []
        return self.processor.layout(task, text_ids, row["codes"], full=True, truncation=True)

    def __call__(self, rows: list[dict]) -> dict:
        sequences = [self.sequence(row) for row in rows]
        batch = self.processor.pad_sequences(sequences, padding_side="right", return_labels=True)
        return {key: torch.tensor(value) for key, value in batch.items()}


def new_model(args, dataset) -> tuple[CogViewForCausalLM, CogViewProcessor]:
    vqvae = CogViewVQVAE.from_pretrained(args.vqvae)
    image_processor = CogViewImageProcessor.from_pretrained(args.vqvae)
    tokenizer = CogViewTokenizerFast(vocab_file=args.tokenizer, image_vocab_size=vqvae.config.num_embeddings)
    image_tokens = len(dataset[0]["codes"])
    grid = math.isqrt(image_tokens)
    if grid * grid != image_tokens:
        raise SystemExit(f"error: {image_tokens} codes per image do not form a square grid")
    longest_text = max(len(ids) for ids in dataset["text_ids"])
    real_tokens = len(tokenizer)  # image codes + text pieces + command tokens
    config = CogViewConfig(
        vocab_size=-(-real_tokens // 8) * 8,  # rows padded to a multiple of 8, as the release pads to 128
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        max_position_embeddings=image_tokens + longest_text + 4 + args.extra_positions,
        image_vocab_size=vqvae.config.num_embeddings,
        text_vocab_size=tokenizer.vocab_size - vqvae.config.num_embeddings,
        image_grid_size=grid,
        hidden_dropout=args.dropout,
        attention_dropout=args.dropout,
        txt_loss_scale=args.txt_loss_scale if args.txt_loss_scale is not None else 1.0,
        vq_config=vqvae.config,
    )
    model = CogViewForCausalLM(config)
    model.vqvae.load_state_dict(vqvae.state_dict())
    processor = CogViewProcessor(image_processor, tokenizer, image_seq_length=image_tokens, max_length=config.max_position_embeddings)
    return model, processor


def with_lora(model, args):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    return model


def base_model_id(args) -> str | None:
    """The Hub id the run started from: --base_model_id, or --model when it is a repo id rather than a folder."""
    if args.base_model_id:
        return args.base_model_id
    return args.model if args.model and not Path(args.model).exists() else None


def write_model_card(
    output_dir: Path, model: CogViewForCausalLM, args, metrics: dict, repo_id: str | None = None, processor: CogViewProcessor | None = None
):
    """README.md from model_card.md (see modeling_cogview.model_card); given the processor, also the sample grid
    samples.png that the card shows. No folder of this machine goes into it."""
    data = f"Data: {metrics['rows']} rows" + (f" of [{args.dataset_id}](/datasets/{args.dataset_id})." if args.dataset_id else ".")
    training = (
        f"{metrics['steps']} steps, batch {args.per_device_train_batch_size} per device, learning rate "
        f"{args.learning_rate}, tasks {', '.join(args.tasks)}, caption dropout {args.text_dropout}, text-loss weight {model.config.txt_loss_scale}"
        f"{', LoRA r=' + str(args.lora_r) if args.lora_r else ''}; final training loss {metrics['train_loss']:.4f}, "
        f"{metrics['train_seconds']:.0f} s on {metrics['device']}. {data}"
    )
    content = CardContent(
        repo_id=repo_id or args.hub_model_id or args.model_name or output_dir.name,
        description=args.description,
        training=training,
        base_model=base_model_id(args),
        adapter=bool(args.lora_r and not args.merge_lora),
        datasets=[args.dataset_id] if args.dataset_id else None,
        sample_prompts=args.sample_prompts or [args.example_prompt],
    )
    if processor is not None and not args.no_sample:
        prompts = content.sample_prompts
        candidates = getattr(model.generation_config, "rerank_candidates", None) or 1
        content.sample_caption = write_samples(output_dir, model, processor, prompts, samples_per_prompt(prompts), candidates, args.seed)
        content.sample_image = SAMPLES_FILE
    render_card(content, model.config, model.generation_config, model.num_parameters()).save(output_dir / "README.md")


class HubPushError(Exception):
    """A push refused before anything is sent: reported as one line, exit code 2."""


class CogViewTrainer(Trainer):
    """The Trainer, whose `push_to_hub` uploads this script's model card (and sample picture) instead of the generic
    Trainer card, and nothing that names a folder of this machine."""

    card_writer: Callable[[str], None] | None = None  # repo id -> README.md (and samples.png) in output_dir

    def create_model_card(self, *args, **kwargs) -> None:
        # push_to_hub calls this after saving the model into output_dir and before uploading that folder
        output_dir = Path(self.args.output_dir)
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # pickled arguments: this machine's paths, --hub_token
        if (output_dir / "config.json").is_file():
            clean_config_file(output_dir / "config.json")
        if self.card_writer is not None:
            self.card_writer(self.hub_model_id)
        found = folder_machine_paths(output_dir, skip_prefixes=("checkpoint-", "_"))
        if found:
            where = "; ".join(f"{name}: {', '.join(paths)}" for name, paths in found.items())
            raise HubPushError(f"not pushed: these files name folders of this machine: {where}")


def one_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_hub_args(args) -> None:
    """Before any data is read: a token, valid repo ids, and for a LoRA adapter the Hub id of its base model."""
    if not (args.hub_token or get_token()):
        raise HubPushError("--push_to_hub needs a Hugging Face token: pass --hub_token, set HF_TOKEN, or log in with `hf auth login`")
    for option, repo_id in (("--hub_model_id", args.hub_model_id), ("--base_model_id", args.base_model_id)):
        if repo_id is not None:
            try:
                validate_repo_id(repo_id)
            except HFValidationError as error:
                raise HubPushError(f"invalid {option} {repo_id!r}: {error}") from None
    if args.lora_r and not args.merge_lora and base_model_id(args) is None:
        raise HubPushError(
            "pushing a LoRA adapter needs --base_model_id, the Hub id of --model: the adapter's card and "
            "adapter_config.json name it as the base model"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="tokenize_dataset.py output (the dataset folder)")
    parser.add_argument("--split", default="train", help="rows whose 'split' column has this value (if the column exists)")
    parser.add_argument("--output_dir", required=True)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", help="continue from this CogView model folder (fine-tuning, LoRA)")
    start.add_argument("--vqvae", help="from scratch: the VQ-VAE folder from train_vqvae.py")
    parser.add_argument("--tokenizer", help="from scratch: the SentencePiece .model file")
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_heads", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--extra_positions", type=int, default=8, help="positions beyond the longest training sequence")
    parser.add_argument("--tasks", default="text-to-image,image-to-text", help="comma-separated: text-to-image, image-to-text (repeat one to weigh it)")
    parser.add_argument("--text_dropout", type=float, default=0.0, help="fraction of text-to-image rows trained without caption (for guidance)")
    parser.add_argument("--txt_loss_scale", type=float, default=None, help="loss weight of text positions (default: the model's)")
    parser.add_argument("--max_steps", type=int, default=1000)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_ratio", type=float, default=0.05)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--save_steps", type=int, default=500)
    parser.add_argument("--logging_steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora_r", type=int, default=0, help="> 0: train LoRA adapters on q/k/v/o_proj and fc1/fc2")
    parser.add_argument("--lora_alpha", type=int, default=16)
    parser.add_argument("--lora_dropout", type=float, default=0.0)
    parser.add_argument("--merge_lora", action="store_true", help="save the merged model instead of the adapter")
    parser.add_argument("--gen_top_k", type=int, default=None, help="sampling default written to generation_config.json")
    parser.add_argument("--gen_temperature", type=float, default=None, help="sampling default written to generation_config.json")
    parser.add_argument("--gen_guidance_scale", type=float, default=None, help="guidance default written to generation_config.json")
    parser.add_argument("--gen_rerank_candidates", type=int, default=None, help="self-reranking default (candidates per image) written to generation_config.json")
    parser.add_argument("--model_name", default=None, help="the model card's name and repo id")
    parser.add_argument("--description", default="", help="a paragraph for the model card")
    parser.add_argument("--example_prompt", default="a handwritten digit 7")
    parser.add_argument("--sample_prompts", nargs="+", default=None, help="prompts of the card's sample picture and widget (default: --example_prompt)")
    parser.add_argument("--no_sample", action="store_true", help="push without drawing the sample picture")
    parser.add_argument("--dataset_id", default=None, help="the Hub id of the training data, for the card's datasets")
    parser.add_argument("--base_model_id", default=None, help="the Hub id of --model (the card's base_model; required to push a LoRA adapter)")
    hub = parser.add_argument_group("Hub (TrainingArguments' arguments)")
    hub.add_argument("--push_to_hub", action="store_true", help="push the result (model or LoRA adapter, processor, card) at the end")
    hub.add_argument("--hub_model_id", default=None, help="NAMESPACE/NAME (default: the output folder's name under the token's user)")
    hub.add_argument("--hub_token", default=None, help="default: HF_TOKEN, else the saved login")
    hub.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if any(t not in ("text-to-image", "image-to-text") for t in args.tasks) or not args.tasks:
        parser.error("--tasks takes text-to-image and/or image-to-text")
    if args.vqvae and not args.tokenizer:
        parser.error("--vqvae (training from scratch) needs --tokenizer")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.push_to_hub:
        try:
            check_hub_args(args)
        except HubPushError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    dataset = load_from_disk(args.dataset)
    if "split" in dataset.column_names and args.split:
        dataset = dataset.filter(lambda split: split == args.split, input_columns="split")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    needed = args.per_device_train_batch_size * world_size * args.gradient_accumulation_steps
    if len(dataset) < needed:
        raise SystemExit(f"error: {len(dataset)} training rows cannot fill one step of {needed} (batch x processes x accumulation)")

    torch.manual_seed(args.seed)
    if args.model:
        model, processor = CogViewForCausalLM.from_pretrained(args.model), CogViewProcessor.from_pretrained(args.model)
        if args.txt_loss_scale is not None:
            model.config.txt_loss_scale = args.txt_loss_scale
    else:
        model, processor = new_model(args, dataset)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained = with_lora(model, args) if args.lora_r else model
    if args.lora_r and base_model_id(args):  # adapter_config.json names its base by Hub id, not by a folder here
        trained.peft_config["default"].base_model_name_or_path = base_model_id(args)

    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(args.warmup_ratio * args.max_steps),
        weight_decay=args.weight_decay,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=args.logging_steps,
        report_to=[],
        remove_unused_columns=False,  # the collator reads codes and text_ids
        dataloader_drop_last=True,
        seed=args.seed,
        ddp_find_unused_parameters=False,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        hub_token=args.hub_token,
        hub_private_repo=args.hub_private_repo or None,
        hub_strategy="end",  # one push of the finished model, no checkpoints
    )
    try:  # with --push_to_hub, the Trainer creates the repo here, before training
        trainer = CogViewTrainer(model=trained, args=training_args, train_dataset=dataset, data_collator=CogViewCollator(processor, args.tasks, args.text_dropout, args.seed))
    except (httpx2.HTTPError, ConnectionError) as error:  # HfHubHTTPError is an httpx2.HTTPError too
        print(f"error: cannot create the Hub repo, nothing was trained: {one_line(error)}", file=sys.stderr)
        return 2
    last_checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last_checkpoint:
        print(f"resuming from {last_checkpoint}")
    start = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint)

    state_dict = None  # sharded weights (FSDP, DeepSpeed ZeRO-3) are gathered by every process, then process zero writes
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    elif trainer.is_deepspeed_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)

    if trainer.is_world_process_zero():
        final = trained
        if args.lora_r and args.merge_lora:
            final = trained.merge_and_unload()
        base = final.get_base_model() if hasattr(final, "get_base_model") else final
        generation = {k: v for k, v in (("top_k", args.gen_top_k), ("temperature", args.gen_temperature), ("guidance_scale", args.gen_guidance_scale), ("rerank_candidates", args.gen_rerank_candidates)) if v is not None}
        if not base.generation_config.do_sample:  # built from a config (greedy): the trained folder samples as the release did
            base.generation_config = release_generation_config(base.config)
        for key, value in base.generation_config.update(**generation).items():  # update() skips what it does not
            setattr(base.generation_config, key, value)  # know (rerank_candidates), and saving keeps custom attributes
        final.save_pretrained(output_dir, state_dict=state_dict)
        if args.lora_r and not args.merge_lora:
            base.generation_config.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        metrics = {
            "steps": result.global_step,
            "train_loss": result.training_loss,
            "train_seconds": time.time() - start,
            "rows": len(dataset),
            "device": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        }
        write_model_card(output_dir, base, args, metrics)
        (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(f"wrote {output_dir}: loss {result.training_loss:.4f} after {result.global_step} steps")
        if args.push_to_hub:
            trainer.model = final  # push_to_hub saves trainer.model again: the merged model when --merge_lora
            trainer.card_writer = lambda repo_id: write_model_card(output_dir, base, args, metrics, repo_id, processor)
    if args.push_to_hub:
        return push_trained(trainer, args, output_dir)
    return 0


def push_trained(trainer: CogViewTrainer, args, output_dir: Path) -> int:
    """`Trainer.push_to_hub` (all processes call it, process zero uploads); one-line errors, exit code 2."""
    try:
        commit = trainer.push_to_hub(commit_message=f"Train {args.max_steps} steps with scripts/train.py")
    except HubPushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (httpx2.HTTPError, ConnectionError) as error:
        print(f"error: the push failed ({one_line(error)}); the trained model is in {output_dir}: run the same command "
              "again to push it", file=sys.stderr)  # fmt: skip
        return 2
    if commit is not None:
        print(f"pushed {output_dir} to {trainer.hub_model_id}: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
