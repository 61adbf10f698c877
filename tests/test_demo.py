"""The demo trains both models end to end and writes its figures and results."""

import json
import math

import pytest

from course_lib.demo import BUDGETS, run


@pytest.mark.slow
def test_quick_demo_writes_figures_and_scores(tmp_path):
    results = run(tmp_path, dict(BUDGETS["quick"]), device="cpu", progress=False)
    for name in ("fpn", "single_scale"):
        for figure in ("loss_curves", "predictions"):
            assert (tmp_path / f"{name}_{figure}.png").stat().st_size > 1000
        scores = results["models"][name]["test_miou_by_size"]
        assert set(scores) == {"small", "medium", "large", "all"}
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in scores.values())
        assert 0.0 < results["models"][name]["test_miou"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"] == BUDGETS["quick"]
    assert set(saved["fpn_minus_single_scale"]) == {"small", "medium", "large", "all"}
