"""examples/train_dreambooth.py on a tiny pipeline: the plumbing (instance folder + prompt -> fine-tuned pipeline),
resume, and bad input. The tiny model learns nothing meaningful in a few steps; the test checks what runs and what is
saved, and that the instance prompt is what the model was trained on."""

import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_pixart import tiny
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.training import engine
from diffusers_pixart.training.engine import list_checkpoints

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_dreambooth.py"
PROMPT = "a photo of a pink star"


def load_script():
    spec = importlib.util.spec_from_file_location("train_dreambooth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("dreambooth")
    tiny.make_pipeline().save_pretrained(root / "base")
    (root / "instance").mkdir()
    for i in range(3):  # a shape and colour the toy captions never pair: a pink star, in three places
        array = np.zeros((40, 48, 3), dtype=np.uint8)
        array[8 + 4 * i : 24 + 4 * i, 10 + 6 * i : 26 + 6 * i] = (255, 105, 180)
        PIL.Image.fromarray(array).save(root / "instance" / f"{i}.png")
    return root


def args(assets, out, *extra):
    return [
        "--pretrained_model_name_or_path", str(assets / "base"), "--instance_data", str(assets / "instance"),
        "--instance_prompt", PROMPT, "--output_dir", str(out), "--resolution", "32", "--learning_rate", "1e-3",
        "--validation_steps", "0", "--report_to", "none", "--checkpointing_steps", "2", *extra,
    ]  # fmt: skip


def test_dreambooth_fine_tunes_on_the_instance_prompt_and_resumes(assets, tmp_path, monkeypatch):
    script = load_script()
    seen: list[str] = []
    loss = engine.Trainer._loss

    def recording_loss(self, batch, micro_step):
        seen.extend(batch["text"])
        assert tuple(batch["pixel_values"].shape[-2:]) == (32, 32)
        return loss(self, batch, micro_step)

    monkeypatch.setattr(engine.Trainer, "_loss", recording_loss)
    out = tmp_path / "run"
    assert script.main(args(assets, out, "--max_train_steps", "2")) == 0
    assert seen == [PROMPT, PROMPT]
    base = PixArtAlphaPipeline.from_pretrained(assets / "base").transformer.state_dict()
    tuned = PixArtAlphaPipeline.from_pretrained(out / "pipeline").transformer.state_dict()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]

    seen.clear()
    assert script.main(args(assets, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")) == 0
    assert seen == [PROMPT]  # one more step, not three
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]


def test_dreambooth_defaults_are_the_papers_and_bad_input_exits_with_2(assets, tmp_path, capsys):
    script = load_script()
    config = script.DreamBoothConfig(output_dir="x")
    assert (config.learning_rate, config.max_train_steps, config.caption_dropout) == (5e-6, 300, 0.0)
    assert script.main(args(assets, tmp_path / "a", "--instance_prompt", " ")) == 2
    assert "--instance_prompt are required" in capsys.readouterr().err
