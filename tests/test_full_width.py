"""Memory at the release's width and vocabulary (one layer of 2560, 58,240 ids, a full 32x32 grid): where it
matters, measured, not assumed."""

import subprocess
import sys

import pytest


pytestmark = pytest.mark.slow  # a layer of the release's width: RUN_SLOW=1 runs it


MEASURE_RERANKING = """
import torch
from configuration_cogview import CogViewConfig
from modeling_cogview import CogViewForCausalLM

def megabytes(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":")) // 1024

torch.manual_seed(0)
config = CogViewConfig(num_hidden_layers=1, hidden_dropout=0.0, attention_dropout=0.0)  # the release's width and vocabulary
model = CogViewForCausalLM(config).eval()
token = config.command_token_id
prompt = torch.tensor([[token("[ROI1]"), 9000, 9001, 9002, token("[BASE]"), token("[BOI1]")]] * 8)
sequences = torch.cat([prompt, torch.randint(0, config.image_vocab_size, (8, config.num_image_tokens))], dim=1)
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from the current resident size
before = megabytes("VmRSS")
best = model.best_of(sequences, 8)
print(megabytes("VmHWM") - before, best.shape[0])
"""


def test_best_of_eight_full_grid_candidates_adds_under_two_gigabytes():
    result = subprocess.run([sys.executable, "-c", MEASURE_RERANKING], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    added_mb, kept = (int(v) for v in result.stdout.split())
    assert kept == 1
    # full-vocabulary fp32 logits of every position of 8 candidates alone would be 8 x 1034 x 58240 x 4 B = 1.9 GB
    assert added_mb < 2048, f"best_of added {added_mb} MB"
