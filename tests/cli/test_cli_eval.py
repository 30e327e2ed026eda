"""``pixart eval``: toy CompBench, FID and CLIP score end to end with tiny models; bad input exits with code 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_pixart.cli import main
from diffusers_pixart.tiny import make_pipeline
from diffusers_pixart.toy import sample_prompts, score_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    make_pipeline(seed=1).save_pretrained(path)
    return path


def _cells(sheet_path, count, size):
    """The images of a contact sheet written with the default layout (padding 2)."""
    sheet = Image.open(sheet_path)
    columns = int(np.ceil(np.sqrt(count)))
    cells = []
    for index in range(count):
        row, col = divmod(index, columns)
        x, y = 2 + col * (size + 2), 2 + row * (size + 2)
        cells.append(sheet.crop((x, y, x + size, y + size)))
    return cells


def test_eval_toy_end_to_end(model_dir, tmp_path, capsys):
    out = tmp_path / "toy"
    args = ["eval", "toy", "--model", str(model_dir), "--num-prompts", "3", "--steps", "2", "--resolution", "32"]
    assert main([*args, "--seed", "4", "--out", str(out)]) == 0
    results = json.loads((out / "scores.json").read_text())
    prompts = sample_prompts(3, seed=4)
    assert [entry["prompt"] for entry in results["per_image"]] == [p.text for p in prompts]
    assert results["steps"] == 2 and results["resolution"] == 32 and results["model"] == str(model_dir)
    # The scores in the JSON are those of the images on the contact sheet.
    for cell, prompt, entry in zip(_cells(out / "contact_sheet.png", 3, 32), prompts, results["per_image"]):
        assert score_image(cell, prompt.meaning) == entry["scores"]
    for name in ("color", "shape", "count", "overall"):
        expected = np.mean([entry["scores"][name] for entry in results["per_image"]])
        assert results["scores"][name] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert f"overall: {results['scores']['overall']:.4f}" in printed
    # Same seed, same images.
    assert main([*args, "--seed", "4", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "contact_sheet.png").read_bytes() == (out / "contact_sheet.png").read_bytes()


def test_eval_fid_and_clip_end_to_end(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square on the left\n")
    reference = tmp_path / "reference"
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(reference / f"{i}.png")

    class MeanColour(torch.nn.Module):  # stands in for the TF-FID Inception TorchScript file
        def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return images.float().mean(dim=(2, 3))

    inception = tmp_path / "inception.pt"
    torch.jit.script(MeanColour()).save(str(inception))
    common = ["--model", str(model_dir), "--prompts", str(prompts), "--steps", "2", "--resolution", "32"]
    fid_args = ["--reference", str(reference), "--inception", str(inception), "--out", str(tmp_path / "fid")]
    assert main(["eval", "fid", *common, *fid_args]) == 0
    results = json.loads((tmp_path / "fid" / "scores.json").read_text())
    assert results["prompts"] == ["a red circle", "a blue square on the left"] and results["num_reference"] == 3
    assert results["scores"]["fid"] > 0
    assert f"fid: {results['scores']['fid']:.4f}" in capsys.readouterr().out

    from test_metrics import _tiny_clip

    model, processor = _tiny_clip(seed=5)
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    assert (
        main(["eval", "clip", *common, "--clip-model", str(tmp_path / "clip"), "--out", str(tmp_path / "clip_out")])
        == 0
    )
    results = json.loads((tmp_path / "clip_out" / "scores.json").read_text())
    per_image = [entry["clip_score"] for entry in results["per_image"]]
    assert results["scores"]["clip_score"] == pytest.approx(np.mean(per_image)) and min(per_image) > 0


def test_eval_bad_input_exits_2_with_message(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    common = ["--model", str(model_dir), "--steps", "1", "--resolution", "32"]
    assert main(["eval", "toy", *common, "--num-prompts", "0", "--out", str(tmp_path / "a")]) == 2
    assert "`n` must be at least 1" in capsys.readouterr().err
    assert (
        main(["eval", "clip", *common, "--prompts", str(empty), "--clip-model", "x", "--out", str(tmp_path / "b")]) == 2
    )
    assert "holds no prompts" in capsys.readouterr().err
    fid_args = ["eval", "fid", *common, "--prompts", str(tmp_path / "missing.txt"), "--inception", "x.pt"]
    assert main([*fid_args, "--reference", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_eval_fuses_the_models_lcm_lora_as_generate_does(lcm_model, tmp_path):
    """``eval --scheduler lcm`` loads and fuses the model's own LCM-LoRA (the loader it shares with ``generate``);
    ``--no-fuse-lora`` keeps it separate, with the same images up to 8-bit rounding."""
    args = ["eval", "toy", "--model", lcm_model, "--scheduler", "lcm", "--num-prompts", "2", "--steps", "1"]
    sheets = []
    for flags, fused in (([], True), (["--no-fuse-lora"], False)):
        out = tmp_path / str(fused)
        assert main([*args, "--resolution", "32", *flags, "--out", str(out)]) == 0
        assert json.loads((out / "scores.json").read_text())["model"].endswith(" (fused)") is fused
        sheets.append(np.asarray(Image.open(out / "contact_sheet.png"), dtype=np.int16))
    assert np.abs(sheets[0] - sheets[1]).max() <= 1
