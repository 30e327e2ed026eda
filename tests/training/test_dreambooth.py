"""examples/train_dreambooth.py on a tiny pipeline: the plumbing (instance folder + prompt -> fine-tuned pipeline),
resume, and bad input. The tiny model learns nothing meaningful in a few steps; the test checks what runs and what is
saved, and that the instance prompt is what the model was trained on."""

import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file
from tolerances import FORWARD

from diffusers_pixart import tiny
from diffusers_pixart.hub import LORA_WEIGHT_NAME
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.training.checkpoints import list_checkpoints
from diffusers_pixart.training.conditioning import CaptionConditioning

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_dreambooth.py"
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
    encode = CaptionConditioning.encode

    def recording_encode(self, batch, device):
        seen.extend(batch["text"])
        assert tuple(batch["pixel_values"].shape[-2:]) == (32, 32)
        return encode(self, batch, device)

    monkeypatch.setattr(CaptionConditioning, "encode", recording_encode)
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
    assert script.main(args(assets, tmp_path / "b", "--lora_rank", "4", "--lora_target_modules", "to_nothing")) == 2
    assert "to_nothing" in capsys.readouterr().err
    assert script.main(args(assets, tmp_path / "c", "--lora_rank", "-1")) == 2
    assert "--lora_rank must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "b" / "checkpoints").exists() and not (tmp_path / "c" / "checkpoints").exists()


def _forward(transformer) -> torch.Tensor:
    """The transformer's output (2, 8, 4, 4) on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x, caption = (
        torch.randn(2, 4, 4, 4, generator=g),
        torch.randn(2, 5, transformer.config.caption_channels, generator=g),
    )
    with torch.no_grad():
        return transformer(x, caption, timestep=torch.tensor([10, 600])).sample


def test_dreambooth_lora_trains_only_the_adapter_saves_a_loadable_file_pushes_and_resumes(
    assets, tmp_path, monkeypatch, hub
):
    script = load_script()
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    repo_id = "alice/dreambooth-lora"
    out = tmp_path / "run"
    lora = ["--lora_rank", "4", "--lora_alpha", "8", "--lora_target_modules", "to_q", "to_v", "--learning_rate", "1e-2"]
    assert (
        script.main(args(assets, out, "--max_train_steps", "2", *lora, "--push_to_hub", "--hub_model_id", repo_id)) == 0
    )
    assert not (out / "pipeline").exists()

    # The checkpoint holds the adapter only (the trainable weights: the base stayed frozen); every factor B moved off 0.
    base = PixArtAlphaPipeline.from_pretrained(assets / "base")
    trained = load_file(out / "checkpoints" / "checkpoint-2" / "model.safetensors")
    lora_keys = [k for k in trained if ".lora_" in k]
    assert len(lora_keys) == len(trained) == 2 * 2 * 2 * 2  # (A, B) x (to_q, to_v) x 2 attentions x 2 blocks
    assert all(trained[k].abs().max() > 0 for k in lora_keys if "lora_B" in k)

    # The saved file in a fresh pipeline reproduces the trained model (rank 4, alpha 8 read back from the file).
    reference = PixArtAlphaPipeline.from_pretrained(assets / "base").transformer
    config = script.DreamBoothConfig(output_dir="x", lora_rank=4, lora_alpha=8.0, lora_target_modules=["to_q", "to_v"])
    script.add_lora_adapter(reference, config)
    assert not reference.load_state_dict(trained, strict=False).unexpected_keys
    base.load_lora_weights(out / "lora")
    torch.testing.assert_close(_forward(base.transformer), _forward(reference), rtol=0, atol=FORWARD)
    assert not torch.allclose(
        _forward(reference), _forward(PixArtAlphaPipeline.from_pretrained(assets / "base").transformer)
    )

    # The Hub repo holds the LoRA file with a LoRA card.
    assert set(HfApi().list_repo_files(repo_id)) == {"README.md", LORA_WEIGHT_NAME}
    card = ModelCard.load(repo_id)
    assert "lora" in card.data.tags and "| LoRA rank | 4 |" in card.text

    seen: list[str] = []
    encode = CaptionConditioning.encode
    monkeypatch.setattr(
        CaptionConditioning, "encode", lambda self, b, d: (seen.extend(b["text"]), encode(self, b, d))[1]
    )
    assert script.main(args(assets, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest", *lora)) == 0
    assert seen == [PROMPT]  # one more step from the LoRA checkpoint
    resumed = load_file(out / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert resumed.keys() == trained.keys() and any(not torch.equal(resumed[k], trained[k]) for k in lora_keys)

    # Resuming at the last step trains nothing: the LoRA file then holds the checkpoint's adapter, loaded on resume.
    assert script.main(args(assets, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest", *lora)) == 0
    reloaded = PixArtAlphaPipeline.from_pretrained(assets / "base")
    reloaded.load_lora_weights(out / "lora")
    expected = PixArtAlphaPipeline.from_pretrained(assets / "base").transformer
    script.add_lora_adapter(expected, config)
    assert not expected.load_state_dict(resumed, strict=False).unexpected_keys
    torch.testing.assert_close(_forward(reloaded.transformer), _forward(expected), rtol=0, atol=FORWARD)
