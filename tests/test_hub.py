"""Sharing on the Hub, end to end over HTTP: scripts/push_to_hub.py, `train.py --push_to_hub` and
`CogViewPipeline.push_to_hub` push to the hub-protocol test server (tests/hub_server.py) through huggingface_hub's real
client, and the repos load back by id: as remote code where the package is hidden, with the package, through the
pipelines and diffusers, pinned to a revision.

huggingface_hub reads HF_ENDPOINT when it is imported, so every client runs in a fresh interpreter pointed at the
server (which runs in this process); a client prints one `RESULT {json}` line that the test asserts on. The bundled
model is pushed once per module and read by every loading test."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard

from conftest import HIDE_PROJECT
from hub_server import HubServer
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.remote_code import BUNDLE_FILES


pytestmark = pytest.mark.slow  # Hub clients in fresh interpreters: RUN_SLOW=1 runs them


ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "cogview-digits"
QUALITY = ROOT / "benchmarks" / "results" / "digits_quality.json"
TOKEN, USER = "hf_test", "you"
REPO, LORA_REPO, DIFFUSERS_REPO = f"{USER}/cogview-digits", f"{USER}/digits-lora", f"{USER}/digits-diffusers"
# an absolute folder of a machine, not part of a URL
MACHINE_PATH = re.compile(r"(?<![\w:/.])/(?:tmp|root|home|work|Users)/")
TEXT_SUFFIXES = (".json", ".md", ".py")
PROBE_IDS = [[331, 256 + 5, 256 + 9, 332, 333, 12, 40, 200]]  # a few ids of the digits vocabulary


def client_env(hub: HubServer, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    """A client of `hub` with its own empty HF_HOME (so no saved login) and module cache."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",  # files travel inside the commit, the protocol the test server speaks
        HF_HOME=str(home),
        HF_MODULES_CACHE=str(home / "modules"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_script(hub: HubServer, name: str, args: list[str], home: Path, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
        env=client_env(hub, home, token), cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def run_client(hub: HubServer, script: str, home: Path, *, hide_project: bool) -> dict[str, Any]:
    """Runs `script` in a fresh interpreter; with `hide_project`, where the project is not importable and PATH is
    bare, as on a machine that only has transformers."""
    env = client_env(hub, home)
    if hide_project:
        env["PATH"] = "/usr/bin:/bin"
    prelude = (HIDE_PROJECT if hide_project else "") + "import json\ndef report(**values):\n    print('RESULT ' + json.dumps(values))\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env=env, cwd=home, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[0].removeprefix("RESULT "))


def folder_digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha1(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir()) if path.is_file()}


def assert_no_machine_paths(files: dict[str, bytes]) -> None:
    for name, content in files.items():
        if name.endswith(TEXT_SUFFIXES):
            assert not MACHINE_PATH.search(content.decode("utf-8")), (name, MACHINE_PATH.findall(content.decode("utf-8")))


def probe_logits(model: CogViewForCausalLM) -> list[float]:
    with torch.no_grad():
        return model(torch.tensor(PROBE_IDS)).logits[0, -1, :8].tolist()


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(tokens={TOKEN: USER}) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory) -> dict[str, Any]:
    """The bundled model pushed by the script (its quality on the card; one draw per sample, to keep it quick)."""
    before = folder_digest(BUNDLED)
    result = run_script(hub, "push_to_hub.py", ["--model", BUNDLED, "--repo_id", REPO, "--quality_json", QUALITY,
                                                "--sample_candidates", "1"], tmp_path_factory.mktemp("push-home"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return {"commit": hub.commits(REPO)[0].oid, "stdout": result.stdout, "folder_before": before}


@pytest.fixture(scope="module")
def lora_pushed(hub, pushed, tmp_path_factory) -> subprocess.CompletedProcess:
    """train.py with LoRA on the bundled model, pushed through TrainingArguments' Hub arguments; its base is the
    pushed repo."""
    from datasets import Dataset

    work = tmp_path_factory.mktemp("lora")
    generator = torch.Generator().manual_seed(0)
    rows = {"codes": torch.randint(0, 256, (8, 64), generator=generator).tolist(),
            "text_ids": torch.randint(256, 320, (8, 5), generator=generator).tolist()}  # fmt: skip
    Dataset.from_dict(rows).save_to_disk(work / "dataset")
    result = run_script(hub, "train.py", [
        "--dataset", work / "dataset", "--model", BUNDLED, "--output_dir", work / "run", "--lora_r", "4",
        "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1",
        "--gen_rerank_candidates", "1", "--sample_prompts", "a handwritten digit 1",
        "--push_to_hub", "--hub_model_id", LORA_REPO, "--base_model_id", REPO,
    ], work / "home")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def with_package(hub, pushed, tmp_path_factory) -> dict[str, Any]:
    """A client with the package: the model by repo id, then its diffusers pipeline pushed with push_to_hub."""
    return run_client(
        hub,
        f"""
        from modeling_cogview import CogViewForCausalLM, CogViewPipeline
        from processing_cogview import CogViewProcessor
        import torch
        model = CogViewForCausalLM.from_pretrained({REPO!r}).eval()
        processor = CogViewProcessor.from_pretrained({REPO!r})
        with torch.no_grad():
            logits = model(torch.tensor({PROBE_IDS})).logits[0, -1, :8].tolist()
        commit = CogViewPipeline(transformer=model, processor=processor).push_to_hub({DIFFUSERS_REPO!r})
        by_model_repo = CogViewPipeline.from_pretrained({REPO!r})  # a repo id in the transformers layout
        by_diffusers_repo = CogViewPipeline.from_pretrained({DIFFUSERS_REPO!r}, trust_remote_code=True)  # and in diffusers'
        drawn = [pipe("a handwritten digit 1", generator=torch.Generator().manual_seed(0), rerank_candidates=1, output_type="latent").images.tolist()
                 for pipe in (by_model_repo, by_diffusers_repo)]
        report(module=type(model).__module__, logits=logits, commit=str(commit), same_from_both_repos=drawn[0] == drawn[1])
        """,
        tmp_path_factory.mktemp("package-home"),
        hide_project=False,
    )


def test_push_uploads_the_model_its_code_and_nothing_of_this_machine(hub, pushed):
    files = hub.files(REPO)
    expected = {"config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                "tokenizer.model", "tokenizer_config.json", "README.md", "samples.png", *BUNDLE_FILES}  # fmt: skip
    assert expected <= set(files), expected - set(files)
    assert files["model.safetensors"] == (BUNDLED / "model.safetensors").read_bytes()
    assert [c.title for c in hub.commits(REPO)] == ["Upload CogView model cogview-digits", "initial commit"]
    config = json.loads(files["config.json"])
    assert config["model_type"] == "cogview" and "_name_or_path" not in json.dumps(config)
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_cogview.CogViewForCausalLM"
    assert_no_machine_paths(files)
    assert folder_digest(BUNDLED) == pushed["folder_before"]  # staged elsewhere: the folder is untouched


def test_card_carries_metadata_quality_usage_and_a_sample_picture(hub, pushed):
    files = hub.files(REPO)
    card = ModelCard(files["README.md"].decode("utf-8"))
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "text-to-image", "apache-2.0")
    assert data.language == ["en", "zh"] and "cogview" in data.tags
    assert data.inference is False  # no Hub widget runs CogView: the card's own picture shows it
    assert data.widget == [{"text": "a handwritten digit 7"}]  # the folder card's example prompt drew the samples
    results = {(r.metric_config, r.metric_name): r.metric_value for r in data.eval_results}
    setting, by_language = next(iter(json.loads(QUALITY.read_text())["conditional_accuracy"].items()))  # the default pipeline
    assert results[(setting, "digit accuracy (en prompts)")] == by_language["en"]["accuracy"]
    assert {r.task_type for r in data.eval_results} == {"text-to-image"}
    text = card.text
    assert "![Samples drawn by this model](samples.png)" in text
    assert f'AutoModelForCausalLM.from_pretrained("{REPO}", trust_remote_code=True)' in text
    assert f'pipeline("text-to-image", model="{REPO}", trust_remote_code=True)' in text
    assert "DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)" in text
    assert "Trained on 4,500 real handwritten digits" in text and "Data: 27000 rows" in text
    assert f"| {setting} | digit accuracy (en prompts) | {by_language['en']['accuracy']} |" in text
    picture = PIL.Image.open(io.BytesIO(files["samples.png"]))
    assert picture.size == (8 * 96 + 7 * 2, 96)  # eight 32 px digits, enlarged to 96 px
    low, high = picture.convert("L").getextrema()
    assert high - low > 100  # drawn, not blank


def test_push_to_a_branch_leaves_main_alone(hub, pushed, tmp_path):
    main_before = hub.branches(REPO)["main"]
    result = run_script(hub, "push_to_hub.py", ["--model", BUNDLED, "--repo_id", REPO, "--revision", "dev", "--no_sample",
                                                "--commit_message", "Try dev"], tmp_path / "home")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert hub.branches(REPO)["main"] == main_before
    assert [c.title for c in hub.commits(REPO, "dev")][:2] == ["Try dev", "Upload CogView model cogview-digits"]
    dev_files = hub.files(REPO, "dev")
    assert "![Samples" not in dev_files["README.md"].decode() and dev_files["model.safetensors"] == hub.files(REPO)["model.safetensors"]


def test_train_push_to_hub_pushes_a_lora_adapter_whose_card_names_its_base(hub, lora_pushed):
    files = hub.files(LORA_REPO)
    assert {"adapter_config.json", "adapter_model.safetensors", "processor_config.json", "README.md", "samples.png"} <= set(files)
    assert not {"training_args.bin", "config.json", "model.safetensors"} & set(files)  # an adapter, without pickles
    assert not any(name.startswith("checkpoint-") for name in files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == REPO
    card = ModelCard(files["README.md"].decode("utf-8"))
    assert (card.data.library_name, card.data.base_model, card.data.pipeline_tag) == ("peft", REPO, "text-to-image")
    assert {"lora", "cogview"} <= set(card.data.tags)
    assert f'PeftModel.from_pretrained(base, "{LORA_REPO}")' in card.text and "LoRA r=4" in card.text
    assert "![Samples drawn by this model](samples.png)" in card.text and "Data: 8 rows." in card.text
    assert_no_machine_paths(files)
    assert hub.commits(LORA_REPO)[0].title == "Train 2 steps with cogview-train"


def test_loads_by_repo_id_with_the_package_and_pushes_diffusers_layout(hub, with_package):
    assert with_package["module"] == "modeling_cogview.modeling_cogview" and with_package["same_from_both_repos"]
    local = CogViewForCausalLM.from_pretrained(BUNDLED).eval()
    torch.testing.assert_close(torch.tensor(with_package["logits"]), torch.tensor(probe_logits(local)))
    files = hub.files(DIFFUSERS_REPO)
    index = json.loads(files["model_index.json"])
    assert index["_class_name"] == ["pipeline_cogview", "CogViewPipeline"]
    assert {"pipeline_cogview.py", "transformer/model.safetensors", "processor/modeling_cogview.py"} <= set(files)


def test_loads_by_repo_id_without_the_package(hub, pushed, lora_pushed, with_package, tmp_path):
    """Remote code only: the Auto classes, a revision pin, the transformers pipeline, diffusers, the adapter."""
    result = run_client(
        hub,
        f"""
        import torch
        from diffusers import DiffusionPipeline
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
        # pinned to the pushed commit (the dev branch moved on since); the pipeline below reads main
        model = AutoModelForCausalLM.from_pretrained({REPO!r}, revision={pushed["commit"]!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({REPO!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = model(torch.tensor({PROBE_IDS})).logits[0, -1, :8].tolist()
            torch.manual_seed(0)
            sequences = model.generate(**processor(text=["a handwritten digit 3"]), num_return_sequences=2)
            drawn = processor.postprocess(model.decode_image_tokens(sequences[:, -model.config.num_image_tokens:]))
        drawings = pipeline("text-to-image", model={REPO!r}, trust_remote_code=True)(
            "手写数字5", num_images_per_prompt=2, rerank_candidates=1, seed=0, progress_bar=False)
        pipe = DiffusionPipeline.from_pretrained({DIFFUSERS_REPO!r}, trust_remote_code=True)
        diffused = pipe("a handwritten digit 8", generator=torch.Generator().manual_seed(0), rerank_candidates=1, progress_bar=False)
        adapted = PeftModel.from_pretrained(model, {LORA_REPO!r})
        report(
            model=type(model).__module__, processor=type(processor).__module__,
            logits=logits, drawn=[image.size for image in drawn], pipeline=[item["image"].size for item in drawings],
            diffusers=[type(pipe).__name__, type(pipe.transformer).__name__, diffused.images[0].size],
            diffusers_sampling=[pipe.transformer.generation_config.top_k, pipe.transformer.generation_config.rerank_candidates],
            adapter=type(adapted).__name__,
        )
        """,
        tmp_path,
        hide_project=True,
    )
    for key in ("model", "processor"):
        assert result[key].startswith("transformers_modules.you.cogview_hyphen_digits."), result[key]
    assert pushed["commit"] in result["model"]  # the code, like the weights, of the pinned commit
    local = CogViewForCausalLM.from_pretrained(BUNDLED).eval()
    torch.testing.assert_close(torch.tensor(result["logits"]), torch.tensor(probe_logits(local)))
    assert result["drawn"] == [[32, 32]] * 2 and result["pipeline"] == [[32, 32]] * 2
    assert result["diffusers"] == ["CogViewPipeline", "CogViewForCausalLM", [32, 32]]
    defaults = json.loads((BUNDLED / "generation_config.json").read_text())
    assert result["diffusers_sampling"] == [defaults["top_k"], defaults["rerank_candidates"]]  # the generation defaults came along
    assert result["adapter"] == "PeftModelForCausalLM"


def test_bad_input_exits_2_with_one_clear_line(hub, tmp_path):
    def failure(args: list, token: str | None = TOKEN) -> str:
        result = run_script(hub, "push_to_hub.py", args, tmp_path / "home", token=token)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        return result.stderr.strip().splitlines()[-1]

    model = ["--model", BUNDLED]
    assert "no Hugging Face token" in failure([*model, "--repo_id", "you/x"], token=None)
    assert "invalid --repo_id 'you/not a name'" in failure([*model, "--repo_id", "you/not a name"])
    assert "refused the token (401)" in failure([*model, "--repo_id", "you/x"], token="hf_wrong")
    assert "refused to write there with this token (403)" in failure([*model, "--repo_id", "someone/x"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_bytes((BUNDLED / "config.json").read_bytes())
    message = failure(["--model", tmp_path / "half", "--repo_id", "you/x"])
    assert "not a complete CogView model folder" in message
    assert all(name in message for name in ("model.safetensors", "processor_config.json", "tokenizer_config.json"))

    hub.fail_next_commits, hub.commit_failure = 1, "disconnect"
    message = failure([*model, "--repo_id", "you/flaky", "--no_sample"])
    assert "connection" in message and "run the command again" in message
    assert hub.fail_next_commits == 0 and not hub.repo_exists("you/flaky")  # the repo this push made is gone again
    assert not hub.repo_exists("you/x") and not hub.repo_exists("someone/x")
