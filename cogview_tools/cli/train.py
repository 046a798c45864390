"""Train CogView with the transformers Trainer on data from cogview-tokenize: from scratch (a VQ-VAE from
cogview-train-vqvae + a SentencePiece model + transformer sizes) or from a checkpoint, optionally with LoRA (PEFT).

The arguments are CogView's (below) and every `TrainingArguments` flag of the Trainer (`--optim`, `--report_to`,
`--fsdp`, `--deepspeed`, `--torch_compile`, `--bf16`, `--gradient_checkpointing`, ...), parsed together by
`HfArgumentParser`; the defaults suit a small run on a CPU (batch 32, learning rate 1e-3, cosine, 1,000 steps). Runs
unchanged under `accelerate launch`; resumes from the last complete checkpoint in --output_dir, exactly where the
straight run would be. The result loads with `from_pretrained` and the pipelines, with its processor and a model card;
`--push_to_hub --hub_model_id ID` pushes it at the end (a LoRA run: the PEFT adapter, its card naming the base model),
checking the token and the repo id before training."""

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from huggingface_hub import HfApi
from transformers import HfArgumentParser, Trainer

from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM, CogViewVQVAE
from modeling_cogview.generation_cogview import release_generation_config
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizerFast

from ..hub import PushError, check_no_machine_paths, check_repo_id, describe_error, full_repo_id, resolve_token, shared_files, stage_files, upload_staged
from ..data import only_split
from ..model_card import SAMPLES_FILE, CardContent, clean_config_file, render_card, samples_per_prompt, write_samples
from ..training import CogViewArguments, CogViewTrainingArguments, DataCollatorForCogView, last_complete_checkpoint


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


def parse_args(argv=None) -> tuple[CogViewArguments, CogViewTrainingArguments]:
    parser = HfArgumentParser((CogViewArguments, CogViewTrainingArguments), description=__doc__)
    args, training_args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if bool(args.model) == bool(args.vqvae):
        parser.error("give --model (continue from a model) or --vqvae with --tokenizer (from scratch), one of them")
    if args.vqvae and not args.tokenizer:
        parser.error("--vqvae (training from scratch) needs --tokenizer")
    if args.super_resolution and not args.model:
        parser.error("--super_resolution fine-tunes a model (--model): train a text-to-image model first, as the release did")
    try:
        args.task_list()
    except ValueError as error:
        parser.error(str(error))
    if args.warmup_ratio is not None:
        training_args.warmup_steps = args.warmup_ratio
    return args, training_args


def new_model(args: CogViewArguments, dataset) -> tuple[CogViewForCausalLM, CogViewProcessor]:
    vqvae = CogViewVQVAE.from_pretrained(args.vqvae)
    image_processor = CogViewImageProcessor.from_pretrained(args.vqvae)
    tokenizer = CogViewTokenizerFast(vocab_file=args.tokenizer, image_vocab_size=vqvae.config.num_embeddings)
    image_tokens = len(dataset[0]["codes"])
    grid = math.isqrt(image_tokens)
    if grid * grid != image_tokens:
        raise SystemExit(f"error: {image_tokens} codes per image do not form a square grid")
    config = CogViewConfig.for_new_model(
        vqvae.config,
        tokenizer,
        image_grid_size=grid,
        longest_text=longest_caption(dataset),
        extra_positions=args.extra_positions,
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        hidden_dropout=args.dropout,
        attention_dropout=args.dropout,
        txt_loss_scale=args.txt_loss_scale if args.txt_loss_scale is not None else 1.0,
    )
    model = CogViewForCausalLM(config)
    model.vqvae.load_state_dict(vqvae.state_dict())
    processor = CogViewProcessor(image_processor, tokenizer, image_seq_length=image_tokens, max_length=config.max_position_embeddings)
    return model, processor


def longest_caption(dataset) -> int:
    return max(len(ids) for ids in dataset["text_ids"])


def make_super_resolution(model: CogViewForCausalLM, processor: CogViewProcessor, dataset) -> None:
    """Fine-tuning into a super-resolution model (as cogview-sr came from cogview-base): the config and the processor
    say so, the longest sequence is what the data needs, and the folder samples as the release's SR scripts did."""
    model.config.super_resolution = True
    model.config.validate_layout()
    processor.super_resolution = True
    longest = 3 + longest_caption(dataset) + processor.source_seq_length + 5 + processor.image_seq_length
    if longest > model.config.max_position_embeddings:
        model.config.max_sequence_length = longest
    processor.max_length = model.config.longest_sequence
    model.generation_config = release_generation_config(model.config)


SUPER_RESOLUTION_TASKS = {"super-resolution", "magnify"}


def check_tasks_fit(tasks: list[str], config: CogViewConfig, dataset) -> None:
    """Before training: super-resolution tasks train a super-resolution model on data with the extra sizes, and a
    super-resolution model trains on them only."""
    sr_tasks = SUPER_RESOLUTION_TASKS & set(tasks)
    if sr_tasks and not config.super_resolution:
        raise ValueError(f"--tasks {','.join(sorted(sr_tasks))} train a super-resolution model: add --super_resolution")
    if config.super_resolution and not sr_tasks.issuperset(tasks):
        raise ValueError(f"a super-resolution model trains on --tasks super-resolution and/or magnify, not {','.join(tasks)}")
    missing = [column for column in ("low_codes", "high_codes") if column not in dataset.column_names]
    if sr_tasks and missing:
        raise ValueError(f"the dataset has no {' or '.join(missing)}: tokenize it with cogview-tokenize --super_resolution")


def with_lora(model, args: CogViewArguments):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    return model


def base_model_id(args: CogViewArguments) -> str | None:
    """The Hub id the run started from: --base_model_id, or --model when it is a repo id rather than a folder."""
    if args.base_model_id:
        return args.base_model_id
    return args.model if args.model and not Path(args.model).exists() else None


def set_generation_defaults(model: CogViewForCausalLM, args: CogViewArguments, dataset) -> None:
    """generation_config.json of the trained folder: the release's sampling for a model built from a config, the
    --gen_* values, and a caption length that ends where the training captions end."""
    if not model.generation_config.do_sample:  # built from a config (greedy): the trained folder samples as the release did
        model.generation_config = release_generation_config(model.config)
    chosen = {
        "top_k": args.gen_top_k,
        "temperature": args.gen_temperature,
        "guidance_scale": args.gen_guidance_scale,
        "rerank_candidates": args.gen_rerank_candidates,
        "caption_length": args.gen_caption_length or (longest_caption(dataset) if "image-to-text" in args.task_list() else None),
    }
    for key, value in chosen.items():  # setattr: update() skips what GenerationConfig does not know (rerank_candidates)
        if value is not None:
            setattr(model.generation_config, key, value)


def write_model_card(
    output_dir: Path, model: CogViewForCausalLM, args: CogViewArguments, training_args, metrics: dict, repo_id: str | None = None, processor=None
):
    """README.md from model_card.md (see cogview_tools.model_card); given the processor, also the sample grid
    samples.png that the card shows. No folder of this machine goes into it."""
    data = f"Data: {metrics['rows']} rows" + (f" of [{args.dataset_id}](/datasets/{args.dataset_id})." if args.dataset_id else ".")
    training = (
        f"{metrics['steps']} steps, batch {training_args.per_device_train_batch_size} per device, learning rate "
        f"{training_args.learning_rate}, tasks {', '.join(args.task_list())}, caption dropout {args.text_dropout}, text-loss weight "
        f"{model.config.txt_loss_scale}{', LoRA r=' + str(args.lora_r) if args.lora_r else ''}; final training loss "
        f"{metrics['train_loss']:.4f}, {metrics['train_seconds']:.0f} s on {metrics['device']}. {data}"
    )
    content = CardContent(
        repo_id=repo_id or training_args.hub_model_id or args.model_name or output_dir.name,
        description=args.description,
        training=training,
        base_model=base_model_id(args),
        adapter=bool(args.lora_r and not args.merge_lora),
        datasets=[args.dataset_id] if args.dataset_id else None,
        sample_prompts=args.sample_prompts or [args.example_prompt],
    )
    if processor is not None and not args.no_sample and not model.config.super_resolution:  # an SR model draws from images
        prompts = content.sample_prompts
        content.sample_caption = write_samples(output_dir, model, processor, prompts, samples_per_prompt(prompts), seed=training_args.seed)
        content.sample_image = SAMPLES_FILE
    render_card(content, model.config, model.generation_config, model.num_parameters()).save(output_dir / "README.md")


def hub_repo_id(args: CogViewArguments, training_args) -> tuple[HfApi, str]:
    """Before any data is read: a token that the Hub accepts, valid repo ids, and for a LoRA adapter the Hub id of its
    base model. Nothing is created on the Hub until the trained folder is ready to push."""
    api = HfApi(token=resolve_token(training_args.hub_token))
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    check_repo_id(repo_id, "--hub_model_id")
    if args.base_model_id is not None:
        check_repo_id(args.base_model_id, "--base_model_id")
    if args.lora_r and not args.merge_lora and base_model_id(args) is None:
        raise PushError(
            "pushing a LoRA adapter needs --base_model_id, the Hub id of --model: the adapter's card and "
            "adapter_config.json name it as the base model"
        )
    return api, full_repo_id(api, repo_id)


def push_trained(api: HfApi, repo_id: str, output_dir: Path, training_args, steps: int) -> str:
    """The trained folder's shareable files, staged and checked, in one commit to `repo_id`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cogview-push-") as staging_dir:
        staging = Path(staging_dir)
        stage_files(output_dir, shared_files(output_dir), staging)
        check_no_machine_paths(staging)
        return upload_staged(api, repo_id, staging, f"Train {steps} steps with cogview-train", private=bool(training_args.hub_private_repo))


def main(argv=None) -> int:
    args, training_args = parse_args(argv)
    output_dir = Path(training_args.output_dir)
    push_to = None
    if training_args.push_to_hub:
        try:
            push_to = hub_repo_id(args, training_args)
        except Exception as error:  # noqa: BLE001 - whatever failed, one line and exit code 2, before any training
            print(f"error: {describe_error(error)}", file=sys.stderr)
            return 2
        training_args.push_to_hub = False  # the Trainer would create the repo now; the finished folder is pushed below
    dataset = only_split(load_from_disk(args.dataset), args.split)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    needed = training_args.per_device_train_batch_size * world_size * training_args.gradient_accumulation_steps
    if len(dataset) < needed:
        raise SystemExit(f"error: {len(dataset)} training rows cannot fill one step of {needed} (batch x processes x accumulation)")

    torch.manual_seed(training_args.seed)
    if args.model:
        model, processor = CogViewForCausalLM.from_pretrained(args.model), CogViewProcessor.from_pretrained(args.model)
        if args.txt_loss_scale is not None:
            model.config.txt_loss_scale = args.txt_loss_scale
        if args.super_resolution:
            make_super_resolution(model, processor, dataset)
    else:
        model, processor = new_model(args, dataset)
    try:
        check_tasks_fit(args.task_list(), model.config, dataset)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    trained = with_lora(model, args) if args.lora_r else model
    if args.lora_r and base_model_id(args):  # adapter_config.json names its base by Hub id, not by a folder here
        trained.peft_config["default"].base_model_name_or_path = base_model_id(args)

    collator = DataCollatorForCogView(processor, args.task_list(), args.text_dropout, training_args.seed)
    trainer = Trainer(
        model=trained, args=training_args, train_dataset=dataset, data_collator=collator, callbacks=[DataCollatorForCogView.EpochCallback(collator)]
    )
    last_checkpoint = last_complete_checkpoint(output_dir)
    if last_checkpoint:
        print(f"resuming from {last_checkpoint}")
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)

    state_dict = None  # sharded weights (FSDP, DeepSpeed ZeRO-3) are gathered by every process, then process zero writes
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    elif trainer.is_deepspeed_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if not trainer.is_world_process_zero():
        return 0

    final = trained.merge_and_unload() if args.lora_r and args.merge_lora else trained
    base = final.get_base_model() if hasattr(final, "get_base_model") else final
    set_generation_defaults(base, args, dataset)
    final.save_pretrained(output_dir, state_dict=state_dict)
    if args.lora_r and not args.merge_lora:
        base.generation_config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle that names this machine's paths and the token
    if (output_dir / "config.json").is_file():
        clean_config_file(output_dir / "config.json")
    metrics = {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": time.time() - start,
        "rows": len(dataset),
        "device": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
    }
    repo_id = push_to[1] if push_to else None
    write_model_card(output_dir, base, args, training_args, metrics, repo_id, processor if push_to else None)
    (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {output_dir}: loss {result.training_loss:.4f} after {result.global_step} steps")
    if push_to is None:
        return 0
    try:
        url = push_trained(*push_to, output_dir, training_args, result.global_step)
    except Exception as error:  # noqa: BLE001
        print(f"error: {describe_error(error)}; the trained model is in {output_dir}: push it with cogview-push", file=sys.stderr)
        return 2
    print(f"pushed {output_dir} to {repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
