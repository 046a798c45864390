"""Parallelism on 2 CPU processes (gloo): tensor parallelism with `tp_plan="auto"` under torchrun, FSDP2 through
`accelerate launch --config_file configs/accelerate_fsdp2.yaml` with scripts/train.py, the DeepSpeed ZeRO-3 config
read by accelerate's own launcher code (DeepSpeed itself is not installed here), and benchmarks/device_check.py's
refusal to run without a GPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from modeling_cogview import CogViewForCausalLM


pytestmark = pytest.mark.slow  # two processes each (torchrun, accelerate launch): RUN_SLOW=1 runs them
ROOT = Path(__file__).resolve().parent.parent
FSDP_CONFIG = ROOT / "configs" / "accelerate_fsdp2.yaml"
ZERO3_CONFIG = ROOT / "configs" / "accelerate_deepspeed_zero3.yaml"
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env)


# ----------------------------------------------------------------------------------------------------------------------
# Tensor parallel: from_pretrained(tp_plan="auto") under torchrun --nproc_per_node 2, on CPU. transformers creates the
# gloo process group itself (distributed/utils.py: initialize_distributed_mesh -> _ensure_torch_distributed, "cpu" ->
# "gloo"), shards by config.base_model_tp_plan + embed_tokens "embedding_rowwise" + the head's colwise_gather_output.

TP_WORKER = """
import json, os, sys, warnings
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from transformers.distributed import DistributedConfig
from modeling_cogview import CogViewForCausalLM

folder, out = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
ids, mask = torch.load(os.path.join(out, "inputs.pt"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # tp_plan= is kept as a shortcut for DistributedConfig(tp_plan=)
    model = CogViewForCausalLM.from_pretrained(folder, tp_plan="auto").eval()

def layout(tensor):
    if isinstance(tensor, DTensor):
        return {"placements": [repr(p) for p in tensor.placements], "local": list(tensor.to_local().shape), "full": list(tensor.shape)}
    return {"placements": None, "local": list(tensor.shape), "full": list(tensor.shape)}

names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
         "model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.fc1.weight", "model.layers.1.mlp.fc2.weight",
         "model.embed_tokens.weight", "model.embed_positions.weight"]
report = {"world_size": dist.get_world_size(), "backend": dist.get_backend(),
          "params": {name: layout(model.get_parameter(name)) for name in names},
          "tied": model.lm_head.weight is model.model.embed_tokens.weight}
with torch.no_grad():
    torch.save(model(ids, attention_mask=mask).logits, os.path.join(out, f"logits-{rank}.pt"))
    model2 = CogViewForCausalLM.from_pretrained(folder, distributed_config=DistributedConfig(tp_plan="auto")).eval()
    torch.save(model2(ids, attention_mask=mask).logits, os.path.join(out, f"logits-config-{rank}.pt"))

config = model.config
prompt = torch.tensor([[config.command_token_id("[ROI1]"), 110, 111, 112, config.command_token_id("[BASE]"), config.command_token_id("[BOI1]")]])
report["generate"] = {}
for name, kwargs in {"dynamic": {}, "guidance": {"guidance_scale": 3.0}, "static": {"cache_implementation": "static"}, "drawing call": {"generation_mode": "image", "guidance_scale": 3.0}}.items():
    torch.manual_seed(0)
    try:
        report["generate"][name] = model.generate(prompt, do_sample=True, top_k=5, max_new_tokens=16, **kwargs)[0].tolist()
    except Exception as error:
        report["generate"][name] = f"{type(error).__name__}: {error}"
with open(os.path.join(out, f"report-{rank}.json"), "w") as f:
    json.dump(report, f)
"""

TP_GENERATE_KWARGS = {"dynamic": {}, "guidance": {"guidance_scale": 3.0}, "static": {"cache_implementation": "static"}, "drawing call": {"generation_mode": "image", "guidance_scale": 3.0}}


@pytest.fixture(scope="module")
def tensor_parallel(tmp_path_factory):
    """One torchrun of the worker (2 ranks); the single-process model and inputs to compare with."""
    folder = tmp_path_factory.mktemp("tp")
    torch.manual_seed(0)
    config = tiny_config(vq_config=None)  # hidden 32, 4 heads, 200 ids: all divisible by 2
    CogViewForCausalLM(config).save_pretrained(folder / "model")
    ids = torch.randint(0, 164, (2, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in the second row
    torch.save((ids, mask), folder / "inputs.pt")
    (folder / "worker.py").write_text(TP_WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(folder / "worker.py"), str(folder / "model"), str(folder)]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    reports = [json.loads((folder / f"report-{rank}.json").read_text()) for rank in (0, 1)]
    single = CogViewForCausalLM.from_pretrained(folder / "model").eval()
    return folder, reports, single, ids, mask


def test_tensor_parallel_shards_the_model_by_its_plan(tensor_parallel):
    _, reports, _, _, _ = tensor_parallel
    for report in reports:
        assert report["world_size"] == 2 and report["backend"] == "gloo" and report["tied"]
        params = report["params"]
        for name in ("q_proj", "k_proj", "v_proj"):  # colwise: output rows split
            assert params[f"model.layers.0.self_attn.{name}.weight"] == {"placements": ["Shard(dim=0)"], "local": [16, 32], "full": [32, 32]}
        assert params["model.layers.0.self_attn.o_proj.weight"] == {"placements": ["Shard(dim=1)"], "local": [32, 16], "full": [32, 32]}
        assert params["model.layers.1.mlp.fc1.weight"] == {"placements": ["Shard(dim=0)"], "local": [32, 32], "full": [64, 32]}
        assert params["model.layers.1.mlp.fc2.weight"] == {"placements": ["Shard(dim=1)"], "local": [32, 32], "full": [32, 64]}
        # the word embedding (and the head tied to it) split over the vocabulary; positions replicated
        assert params["model.embed_tokens.weight"] == {"placements": ["Shard(dim=0)"], "local": [100, 32], "full": [200, 32]}
        assert params["model.embed_positions.weight"]["local"] == [48, 32]


def test_tensor_parallel_logits_equal_the_single_process_ones(tensor_parallel):
    folder, _, single, ids, mask = tensor_parallel
    with torch.no_grad():
        expected = single(ids, attention_mask=mask).logits
    for name in ("logits-0", "logits-1", "logits-config-0", "logits-config-1"):  # tp_plan="auto" and DistributedConfig
        logits = torch.load(folder / f"{name}.pt")
        assert type(logits) is torch.Tensor  # gathered: a plain full-vocabulary tensor on every rank
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_tensor_parallel_generate_equals_the_single_process_one(tensor_parallel):
    _, reports, single, _, _ = tensor_parallel
    config = single.config
    prompt = torch.tensor([[config.command_token_id("[ROI1]"), 110, 111, 112, config.command_token_id("[BASE]"), config.command_token_id("[BOI1]")]])
    for name, kwargs in TP_GENERATE_KWARGS.items():
        torch.manual_seed(0)
        expected = single.generate(prompt, do_sample=True, top_k=5, max_new_tokens=16, **kwargs)[0].tolist()
        for report in reports:
            assert report["generate"][name] == expected, (name, report["generate"][name])


# ----------------------------------------------------------------------------------------------------------------------
# FSDP2 through accelerate. accelerate turns distributed_type FSDP on only for accelerator process groups
# (accelerate/state.py, AcceleratorState.__init__: `elif self.distributed_type in [DistributedType.MULTI_GPU, ...,
# MULTI_NEURON]: ... if os.environ.get("ACCELERATE_USE_FSDP") ...: self.distributed_type = DistributedType.FSDP`;
# MULTI_CPU is not in that list), so on CPU the same yaml silently trains with DDP. This launcher makes the one
# change that CPU needs (the FSDP plugin accelerate built from the yaml is used on the gloo group) and reports the
# FSDP2 units that accelerate's fsdp2_prepare_model created; everything else is scripts/train.py as is.

FSDP_ON_CPU = """
import runpy, sys
import accelerate.accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType


init = AcceleratorState.__init__

def __init__(self, *args, fsdp_plugin=None, **kwargs):
    init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin

AcceleratorState.__init__ = __init__
prepare = accelerate.accelerator.fsdp2_prepare_model

def fsdp2_prepare_model(accelerator, model):
    from torch.distributed.fsdp import FSDPModule
    model = prepare(accelerator, model)
    if accelerator.is_main_process:
        units = [name or "<root>" for name, module in model.named_modules() if isinstance(module, FSDPModule)]
        print("FSDP2 units:", ",".join(units), flush=True)
    return model

accelerate.accelerator.fsdp2_prepare_model = fsdp2_prepare_model
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def logged(run_dir: Path, key: str = "loss") -> list[float]:
    state = json.loads((run_dir / "checkpoint-3" / "trainer_state.json").read_text())
    return [entry[key] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def train_args(tiny_model_dir, tmp_path_factory) -> list[str]:
    """train.py's arguments for 3 steps from the tiny model (with its VQ-VAE and processor) on 16 rows."""
    from datasets import Dataset

    folder = tmp_path_factory.mktemp("data")
    generator = torch.Generator().manual_seed(0)
    rows = {"codes": torch.randint(0, 64, (16, 16), generator=generator).tolist(),
            "text_ids": torch.randint(64, 64 + 50000, (16, 3), generator=generator).tolist()}  # fmt: skip
    Dataset.from_dict(rows).save_to_disk(folder / "dataset")  # equal lengths: no padding, same tokens per process
    return ["--dataset", str(folder / "dataset"), "--model", str(tiny_model_dir), "--tasks", "text-to-image",
            "--max_steps", "3", "--logging_steps", "1", "--save_steps", "3", "--no_sample"]  # fmt: skip


@pytest.fixture(scope="module")
def fsdp_runs(train_args, tmp_path_factory):
    """2 FSDP2 processes x batch 2, and 1 process x batch 4, on the same data."""
    folder = tmp_path_factory.mktemp("fsdp")
    (folder / "fsdp_on_cpu.py").write_text(FSDP_ON_CPU)
    train = train_args
    fsdp = run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG), "--main_process_port", "0",
                str(folder / "fsdp_on_cpu.py"), str(ROOT / "scripts" / "train.py"), *train,
                "--per_device_train_batch_size", "2", "--output_dir", str(folder / "fsdp")])  # fmt: skip
    single = run([sys.executable, str(ROOT / "scripts" / "train.py"), *train, "--per_device_train_batch_size", "4", "--output_dir", str(folder / "single")])
    assert single.returncode == 0, single.stderr[-3000:]
    return folder, fsdp


def test_fsdp2_losses_equal_the_single_process_ones(fsdp_runs):
    folder, fsdp = fsdp_runs
    units = next((line for line in fsdp.stdout.splitlines() if line.startswith("FSDP2 units:")), None)
    assert units is not None, fsdp.stdout[-2000:] + fsdp.stderr[-4000:]
    assert {"model.layers.0", "model.layers.1", "<root>"} <= set(units.removeprefix("FSDP2 units: ").split(","))  # one unit per layer
    assert (folder / "fsdp" / "checkpoint-3" / "trainer_state.json").is_file(), fsdp.stderr[-4000:]
    assert logged(folder / "fsdp", "epoch") == [0.25, 0.5, 0.75]  # 2 processes x 2 rows a step, of 16 rows
    fsdp_losses, single_losses = logged(folder / "fsdp"), logged(folder / "single")
    assert len(fsdp_losses) == 3
    torch.testing.assert_close(fsdp_losses, single_losses, rtol=1e-4, atol=0)


def test_fsdp2_run_ends_with_a_loadable_model(fsdp_runs):
    folder, fsdp = fsdp_runs
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    config = json.loads((folder / "fsdp" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("CogViewForCausalLM") and "_fsdp" not in json.dumps(config["auto_map"])
    assert not list((folder / "fsdp").glob("_fsdp_*.py"))
    trained = CogViewForCausalLM.from_pretrained(folder / "fsdp")
    reference = CogViewForCausalLM.from_pretrained(folder / "single")
    for (name, a), (_, b) in zip(trained.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_ddp_fine_tuning_from_a_folder_with_two_processes(train_args, tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts ONE process (simple_launcher runs the script once unless an
    # MPI hostfile is given); --multi_gpu goes through torchrun, and train.py's use_cpu makes it a gloo DDP group.
    result = run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(ROOT / "scripts" / "train.py"),
                  *train_args, "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "ddp")])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert logged(tmp_path / "ddp", "epoch") == [0.25, 0.5, 0.75]  # 2 processes x 2 rows a step


# ----------------------------------------------------------------------------------------------------------------------
# The accelerate configs, read by accelerate's own launcher code


def launch_args(config_file: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    known = {action.dest for action in parser._actions}
    args = parser.parse_args(["--config_file", str(config_file), "--main_process_port", "0", str(ROOT / "scripts" / "train.py")])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults, known


def test_fsdp2_config_holds_accelerate_keys_and_builds_its_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import FullStateDictConfig

    raw = yaml.safe_load(FSDP_CONFIG.read_text())
    args, defaults, known = launch_args(FSDP_CONFIG)
    assert set(raw["fsdp_config"]) <= known, set(raw["fsdp_config"]) - known
    assert args.use_fsdp and args.num_processes == 2 and args.mixed_precision == "no" and defaults.use_cpu
    env = prepare_multi_gpu_env(args)
    with patch_environment(**{k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True and not plugin.activation_checkpointing
    assert plugin.transformer_cls_names_to_wrap == ["CogViewDecoderLayer"] and isinstance(plugin.state_dict_config, FullStateDictConfig)


def test_deepspeed_zero3_config_holds_accelerate_keys_and_builds_its_plugin():
    from accelerate.utils import DeepSpeedPlugin, patch_environment
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    raw = yaml.safe_load(ZERO3_CONFIG.read_text())
    args, defaults, known = launch_args(ZERO3_CONFIG)
    assert set(raw["deepspeed_config"]) <= known, set(raw["deepspeed_config"]) - known
    assert args.use_deepspeed and args.num_processes == 8 and args.mixed_precision == "bf16"
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(args)
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
        plugin = DeepSpeedPlugin()  # the DeepSpeed config accelerate will hand to deepspeed.initialize
        plugin.set_mixed_precision("bf16")
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == 3 and config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert config["zero_optimization"]["offload_optimizer"]["device"] == config["zero_optimization"]["offload_param"]["device"] == "none"
    assert config["gradient_accumulation_steps"] == 1 and config["bf16"] == {"enabled": True} and plugin.zero3_init_flag


# ----------------------------------------------------------------------------------------------------------------------


def test_device_check_refuses_to_run_without_a_gpu(tmp_path):
    output = tmp_path / "device_check.json"
    result = run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--output", str(output)], env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs a CUDA GPU" in result.stderr and not output.exists()
    help_text = run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--help"])
    assert help_text.returncode == 0 and "--quick" in help_text.stdout and "--work_dir" in help_text.stdout
