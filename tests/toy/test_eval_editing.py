"""examples/toy/eval_editing.py on 2 scenes: it runs end to end and writes its results (no score is asserted; the
measured run on 100 scenes is in docs/editing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "toy" / "eval_editing.py"


def _load():
    spec = importlib.util.spec_from_file_location("eval_editing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_runs_on_two_scenes_and_writes_its_results(tmp_path, capsys):
    script = _load()
    cases = script.inpainting_cases(2, seed=3)
    assert [len(case.before.meaning.objects) >= 2 for case in cases] == [True, True]
    assert script.inpainting_cases(2, seed=3) == cases  # deterministic

    assert script.main(["--num-scenes", "2", "--out-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["inpainting"]["num_scenes"] == results["recolouring"]["num_scenes"] == 2
    assert set(results["inpainting"]["scores"]) == {
        "inpainted",
        "text_to_image",
        "target_render",
        "original",
        "round_trip",
    }
    strengths = [f"{s:g}" for s in script.STRENGTHS]
    assert list(results["recolouring"]["scores"]) == ["input", "round trip", *strengths]
    table = (tmp_path / "results.md").read_text()
    assert "| inpainted (strength 1) |" in table and "| 0.5 |" in table and table in capsys.readouterr().out
    size = results["resolution"]
    inpainting, recolouring = Image.open(tmp_path / "inpainting.png"), Image.open(tmp_path / "recolouring.png")
    assert inpainting.size == (2 * size + 3 * 2, 4 * size + 5 * 2)  # 2 scenes x (original, mask, edit, target)
    assert recolouring.size == (2 * size + 3 * 2, (1 + len(strengths)) * size + (2 + len(strengths)) * 2)
