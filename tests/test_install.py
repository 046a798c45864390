"""The package as a user who is not developing it gets it: the wheel built from this checkout, installed (not editable)
into a fresh virtual environment, and its console scripts run from a folder outside the repository: convert a golden
checkpoint, draw, tokenize and train a few steps (card and train_metrics.json written) and push to the test Hub."""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import GOLDEN
from hub_server import HubServer


pytestmark = pytest.mark.slow  # builds a wheel and a virtual environment: RUN_SLOW=1 runs it
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["setup.py", "README.md", "model_card.md", "configuration_cogview.py", "processing_cogview.py", "modeling_cogview", "cogview_tools"]
TOKEN, USER = "hf_test", "you"


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:2]}: {result.stdout[-2000:]}{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A virtual environment holding the wheel; its dependencies are this environment's packages, seen through a .pth
    file (whose own .pth files, such as an editable install of this project, are not read)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", work / "dist", "."], cwd=source)
    (wheel,) = (work / "dist").glob("cogview-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=work)
    python = venv / "bin" / "python"
    venv_site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip())
    (venv_site / "dependencies.pth").write_text("\n".join([sysconfig.get_paths()["purelib"], *site.getsitepackages()]) + "\n")
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=work)
    outside = work / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:/usr/bin:/bin", HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost")
    return {"bin": venv / "bin", "site": venv_site, "cwd": outside, "env": env, "wheel": wheel}


def test_the_wheel_holds_the_packages_the_card_template_and_the_console_scripts(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert {"configuration_cogview.py", "processing_cogview.py", "modeling_cogview/__init__.py", "cogview_tools/model_card.md"} <= set(names)
    assert (installed["site"] / "cogview_tools" / "model_card.md").read_text() == (ROOT / "model_card.md").read_text()
    where = run([installed["bin"] / "python", "-c", "import modeling_cogview, cogview_tools.model_card as m; print(modeling_cogview.__file__); "
                 "print(m.card_template()[:3])"], installed["cwd"], installed["env"]).stdout.split()  # fmt: skip
    assert where[0].startswith(str(installed["site"])) and where[1] == "---"  # the installed copy, not this checkout
    for script in ("cogview-generate", "cogview-caption", "cogview-rerank", "cogview-convert", "cogview-prepare-digits",
                   "cogview-train-vqvae", "cogview-tokenize", "cogview-train", "cogview-push", "cogview-demo"):  # fmt: skip
        assert (installed["bin"] / script).is_file(), script
    usage = run([installed["bin"] / "cogview-generate", "--help"], installed["cwd"], installed["env"]).stdout
    assert "required here" in usage  # no checkout beside it: --model must be given


def test_convert_draw_train_and_push_from_outside_the_repository(installed):
    bin_, cwd, env = installed["bin"], installed["cwd"], installed["env"]
    run([bin_ / "cogview-convert", "--checkpoint_path", GOLDEN / "cogview-tiny-megatron", "--num_attention_heads", "4",
         "--vqvae_path", GOLDEN / "vqvae-tiny.pt", "--tokenizer_path", GOLDEN / "tokenizer" / "cog-pretrain.model",
         "--dtype", "float32", "--output_dir", "converted"], cwd, env)  # fmt: skip
    drawn = run([bin_ / "cogview-generate", "--model", "converted", "--prompt", "一只猫", "--num_images", "1", "--candidates", "1",
                 "--no_progress", "--output_dir", "drawn"], cwd, env)  # fmt: skip
    assert "wrote 1 images" in drawn.stdout and PIL.Image.open(cwd / "drawn" / "grid.png").size == (256, 256)

    images = cwd / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"一只猫 {i}"}, ensure_ascii=False))
    (images / "metadata.jsonl").write_text("\n".join(rows), encoding="utf-8")
    run([bin_ / "cogview-tokenize", "--images_dir", images, "--vqvae", "converted", "--tokenizer", "converted", "--output_dir", "data"], cwd, env)
    with HubServer(tokens={TOKEN: USER}) as hub:
        hub_env = {**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        trained = run([bin_ / "cogview-train", "--dataset", "data/dataset", "--model", "converted", "--output_dir", "run",
                       "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1",
                       "--sample_prompts", "一只猫", "--push_to_hub", "--hub_model_id", f"{USER}/trained"], cwd, hub_env)  # fmt: skip
        assert f"pushed run to {USER}/trained" in trained.stdout
        metrics = json.loads((cwd / "run" / "train_metrics.json").read_text())
        assert metrics["steps"] == 2 and "Sampling defaults" in (cwd / "run" / "README.md").read_text()
        assert {"README.md", "samples.png", "model.safetensors", "train_metrics.json"} <= set(hub.files(f"{USER}/trained"))
        pushed = run([bin_ / "cogview-push", "--model", "converted", "--repo_id", "converted", "--sample_prompts", "一只猫",
                      "--sample_candidates", "1"], cwd, hub_env)  # fmt: skip
        assert pushed.stdout.strip().endswith(hub.commits(f"{USER}/converted")[0].oid)
        assert "inference: false" in hub.files(f"{USER}/converted")["README.md"].decode()
