"""Latent consistency distillation end to end on tiny components: LCM-LoRA and full runs, exact resume, the result."""

import pytest
import torch
from safetensors.torch import load_file

from diffusers_pixart import PixArtAlphaPipeline
from diffusers_pixart.training.distillation import DistillConfig, train_lcm_distill


def _config(training_assets, out, **overrides) -> DistillConfig:
    values = dict(
        pretrained_model_name_or_path=str(training_assets / "base"),
        train_data=str(training_assets / "toy"),
        output_dir=str(out),
        resolution=32,
        train_batch_size=2,
        max_train_steps=4,
        checkpointing_steps=2,
        learning_rate=1e-3,
        validation_steps=0,
        report_to="none",
        shuffle_buffer_size=16,
        num_ddim_timesteps=10,
    )
    return DistillConfig(**{**values, **overrides})


def _weights(folder) -> dict[str, torch.Tensor]:
    files = sorted(folder.rglob("*.safetensors"))
    return {f"{path.relative_to(folder)}:{key}": value for path in files for key, value in load_file(path).items()}


@pytest.mark.parametrize("lora_rank", [4, 0])
def test_distillation_resumes_exactly(training_assets, tmp_path, lora_rank):
    """4 steps straight equal 2 steps, then a resumed run to 4 (the EMA target network is checkpointed too)."""
    straight = train_lcm_distill(_config(training_assets, tmp_path / "straight", lora_rank=lora_rank))
    _ = train_lcm_distill(_config(training_assets, tmp_path / "resumed", lora_rank=lora_rank, max_train_steps=2))
    resumed = train_lcm_distill(
        _config(training_assets, tmp_path / "resumed", lora_rank=lora_rank, resume_from_checkpoint="latest")
    )
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    base = _weights(training_assets / "base" / "transformer")
    if lora_rank:
        assert straight.name == "lora" and all("lora" in key for key in a)
    else:  # the student moved away from the teacher
        assert straight.name == "pipeline"
        moved = [key for key in base if not torch.equal(base[key], a[f"transformer/{key}"])]
        assert moved


def test_the_distilled_pipeline_samples_with_lcm(training_assets, tmp_path):
    folder = train_lcm_distill(_config(training_assets, tmp_path / "full", max_train_steps=1))
    pipe = PixArtAlphaPipeline.from_pretrained(folder)
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    lora = train_lcm_distill(_config(training_assets, tmp_path / "lora", max_train_steps=1, lora_rank=2))
    base = PixArtAlphaPipeline.from_pretrained(training_assets / "base")
    base.load_lora_weights(lora)
    base.set_scheduler("lcm")
    image = base("a red circle", num_inference_steps=2, guidance_scale=0.0, height=32, width=32, output_type="np")
    assert image.images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"caption_dropout": 0.1}, "caption_dropout"),
        ({"num_ddim_timesteps": 48}, "num_ddim_timesteps"),
        ({"teacher_guidance_scale": 0.5}, "guidance_scale"),
        ({"validation_step_counts": [0]}, "validation_step_counts"),
    ],
)
def test_bad_options_are_named_before_any_step(training_assets, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_lcm_distill(_config(training_assets, tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad" / "checkpoints").exists()
