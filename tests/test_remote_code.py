"""A saved folder carries its code: it loads with trust_remote_code where the package is not importable."""

import json
import re
import subprocess
import sys

import torch

from conftest import HIDE_PROJECT, tiny_config
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.remote_code import BUNDLE_FILES


LOAD_WITHOUT_PACKAGE = HIDE_PROJECT + """
import torch
from transformers import AutoModelForCausalLM
folder, ids_file = sys.argv[1], sys.argv[2]
try:
    AutoModelForCausalLM.from_pretrained(folder)
    raise SystemExit("loaded without trust_remote_code")
except ValueError:
    pass
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
ids = torch.load(ids_file)
with torch.no_grad():
    torch.save(model(ids).logits, ids_file + ".logits")
"""


def test_remote_code_loads_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = CogViewForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    saved = {p.name for p in (tmp_path / "model").iterdir()}
    assert set(BUNDLE_FILES) <= saved
    for name in BUNDLE_FILES:  # self-contained: the project's modules are imported relatively, never by name
        code = (tmp_path / "model" / name).read_text()
        assert not re.search(r"^\s*(from|import) (configuration_cogview|processing_cogview|modeling_cogview)\b", code, re.M), name
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_cogview.CogViewForCausalLM"

    ids = torch.randint(0, 160, (2, 9))
    torch.save(ids, tmp_path / "ids.pt")
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(tmp_path / "model"), str(tmp_path / "ids.pt")],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "ids.pt.logits"), model(ids).logits, atol=0, rtol=0)


LOAD_PROCESSOR_WITHOUT_PACKAGE = HIDE_PROJECT + """
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
print(processor(text="一只可爱的猫")["input_ids"].tolist())
"""


def test_remote_code_processor(golden_model_dir, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_PROCESSOR_WITHOUT_PACKAGE, str(golden_model_dir)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[[58199, 24147, 14404, 52698, 58208, 58193]]"
