"""`bench/tapo_experiment.py --quick` end to end (issue 21): the whole chain runs and SFT sees.

The quick form is the full experiment shrunk (a smaller world and base model, one seed, two
RL steps): every number in its table is noise but one, checked here: SFT beats chance on
the seen classes, so the model reads the images at all. ~5 minutes on 2 cores.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_tapo_experiment.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SEEN_CLASSES = 18  # the world's compositional split: 18 seen, 6 unseen


def test_quick_experiment_completes_and_sft_beats_chance(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import tapo_experiment

    workdir = tmp_path / "exp"
    tapo_experiment.main(["--quick", "--workdir", str(workdir)])

    results = json.loads((workdir / "results.json").read_text())
    assert (workdir / "results.md").exists()
    assert len(results["per_seed"]) == len(tapo_experiment.QUICK["seeds"])
    for run in results["per_seed"].values():
        assert set(run["metrics"]) == set(tapo_experiment.MODELS)
    # Chance: naming one of the seen classes at random (open world, seen test images).
    best = max(results["summary"][m]["open_seen"]["mean"] for m in ("sft-direct", "sft-cot"))
    assert best > 1 / SEEN_CLASSES, results["summary"]
    # a rerun of the same workdir with other settings would reuse models built without them
    with pytest.raises(SystemExit, match="sft_epochs"):
        tapo_experiment.main(["--quick", "--workdir", str(workdir), "--sft-epochs", "99"])
