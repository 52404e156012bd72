"""bench/gpu_smoke.py: its CPU path runs here (the GPU run is for a machine with one), and its
3B model is Qwen2.5-VL-3B-Instruct's size.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_gpu_smoke.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_a_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--device", "cpu", "--small", "--sft-steps", "2",
         "--tapo-steps", "2", "--updates-per-generation", "2", "--workdir", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("SFT : 2 steps", "TAPO: 2 steps", "negative-image pass", "tokens/s trained", "peak"):
        assert line in done.stdout, done.stdout
    figures = json.loads(out.read_text())
    assert figures["sft"]["steps"] == 2 and figures["tapo"]["steps"] == 2
    assert figures["sft"]["tokens_per_s"] > 0 and figures["tapo"]["tokens_per_s"] > 0
    assert 0 < figures["tapo"]["negative_pass_share"] < 1
    assert figures["tapo"]["generation_rounds"] == [2.0]  # the first generation needed one refill
    assert figures["tapo"]["rollouts_per_generation"] == 2 * 10  # 2 updates x 1 prompt x 10 rollouts


def test_the_gpu_check_builds_qwen2_5_vl_3b_at_its_published_size():
    import importlib.util

    from train.tiny import SPECIAL_TOKENS, build_tokenizer

    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "bench" / "gpu_smoke.py")
    gpu_smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_smoke)
    qwen2_5_vl_3b_config = gpu_smoke.qwen2_5_vl_3b_config

    tokenizer = build_tokenizer([])
    config = qwen2_5_vl_3b_config({t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS})
    with torch.device("meta"):  # shapes only: no memory
        model = Qwen2_5_VLForConditionalGeneration(config)
    # Qwen/Qwen2.5-VL-3B-Instruct's safetensors hold 3,754,622,976 parameters
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976
