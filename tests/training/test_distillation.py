"""Latent consistency distillation end to end on tiny components: LCM-LoRA and full runs, exact resume, the result."""

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusers_pixart import PixArtAlphaPipeline
from diffusers_pixart.hub import plain_diffusers_blockers
from diffusers_pixart.tiny import make_pipeline
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


@pytest.mark.parametrize(
    ("lora_rank", "options"), [(4, {}), (0, {}), (0, {"guidance_embedding": True})], ids=["lora", "full", "w-embed"]
)
def test_distillation_resumes_exactly(training_assets, tmp_path, lora_rank, options):
    """4 steps straight equal 2 steps, then a resumed run to 4 (the EMA target network is checkpointed too)."""
    straight = train_lcm_distill(_config(training_assets, tmp_path / "straight", lora_rank=lora_rank, **options))
    _ = train_lcm_distill(
        _config(training_assets, tmp_path / "resumed", lora_rank=lora_rank, max_train_steps=2, **options)
    )
    resumed = train_lcm_distill(
        _config(training_assets, tmp_path / "resumed", lora_rank=lora_rank, resume_from_checkpoint="latest", **options)
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


def test_a_base_that_already_compresses_distils_into_a_student_that_keeps_its_kv_weights(training_assets, tmp_path):
    """The route the refusal of --kv_compress_factor names: KV compression trained by the stage scripts first, then
    distilled (teacher and student compress alike); the full student keeps the KV weights, trained on."""
    base = make_pipeline()
    base.transformer.enable_kv_compression(2, layers=[1])
    base.save_pretrained(tmp_path / "compressed")
    folder = train_lcm_distill(
        _config(training_assets, tmp_path / "out", pretrained_model_name_or_path=str(tmp_path / "compressed"))
    )
    student = PixArtAlphaPipeline.from_pretrained(folder).transformer
    assert (student.config.kv_compress_factor, student.config.kv_compress_layers) == (2, [1])
    before = base.transformer.transformer_blocks[1].attn1.kv_compress.conv.weight
    assert not torch.equal(student.transformer_blocks[1].attn1.kv_compress.conv.weight, before)


def _sample(pipe: PixArtAlphaPipeline, guidance_scale: float) -> np.ndarray:
    batches = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    image = pipe(
        "a red circle",
        num_inference_steps=2,
        guidance_scale=guidance_scale,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    hook.remove()
    assert batches == [1, 1]  # a guidance embedding or no guidance: never classifier-free guidance's second batch
    return image


def test_a_zero_initialised_guidance_embedding_starts_as_the_teacher():
    """The student with the embedding gives exactly the teacher's output at any scale (the pipeline passes the scale
    to the embedding, without CFG); the config records it and ``from_pretrained`` rebuilds it."""
    teacher = make_pipeline()
    student = PixArtAlphaPipeline(**{**teacher.components, "transformer": copy.deepcopy(teacher.transformer)})
    student.transformer.enable_guidance_embedding()
    assert student.transformer.config.guidance_embedding
    latents, caption = torch.randn(3, 4, 4, 4), torch.randn(3, 5, teacher.transformer.config.caption_channels)
    with torch.no_grad():
        expected = teacher.transformer(latents, caption, torch.tensor([999, 500, 3])).sample
        for scale in (1.0, 4.5, 14.0):
            guidance = {"guidance": torch.full((3,), scale)}
            got = student.transformer(latents, caption, torch.tensor([999, 500, 3]), added_cond_kwargs=guidance)
            assert torch.equal(got.sample, expected)
    with pytest.raises(ValueError, match="pass `added_cond_kwargs` with 'guidance'"):
        student.transformer(latents, caption, torch.tensor([999, 500, 3]))
    with pytest.raises(ValueError, match="already has a guidance-scale embedding"):
        student.transformer.enable_guidance_embedding()
    unguided = _sample(teacher, 1.0)
    for scale in (0.0, 2.0, 7.5):
        np.testing.assert_array_equal(_sample(student, scale), unguided)


def test_a_student_with_a_guidance_embedding_trains_saves_and_reloads(training_assets, tmp_path):
    """A tiny run trains the embedding; the saved pipeline reloads with it and gives the same images again, and
    other images at another scale."""
    options = dict(guidance_embedding=True, guidance_scale_min=2.0, guidance_scale_max=6.0, max_train_steps=2)
    folder = train_lcm_distill(_config(training_assets, tmp_path / "w", **options))
    pipe = PixArtAlphaPipeline.from_pretrained(folder)
    assert pipe.transformer.config.guidance_embedding and type(pipe.scheduler).__name__ == "LCMScheduler"
    assert pipe.transformer.adaln_single.guidance_embedder.embedder.linear_2.weight.abs().sum() > 0  # it trained
    pipe.save_pretrained(tmp_path / "again")
    again = PixArtAlphaPipeline.from_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(_sample(pipe, 3.0), _sample(again, 3.0))
    assert not np.array_equal(_sample(pipe, 2.0), _sample(pipe, 6.0))
    assert any("guidance embedding" in reason for reason in plain_diffusers_blockers(folder))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"guidance_embedding": True, "lora_rank": 2}, "without --lora_rank"),
        ({"guidance_embedding": True, "guidance_scale_min": 0.5}, "1 <= min <= max"),
        ({"guidance_embedding": True, "guidance_scale_min": 9.0}, "1 <= min <= max"),
        ({"guidance_embedding": True, "validation_steps": 1}, r"choose one in the distilled range \[2.0, 8.0\]"),
        ({"caption_dropout": 0.1}, "caption_dropout"),
        ({"num_ddim_timesteps": 48}, "num_ddim_timesteps"),
        ({"teacher_guidance_scale": 0.5}, "guidance_scale"),
        ({"validation_step_counts": [0]}, "validation_step_counts"),
        # What the result could not keep: an LCM-LoRA holds neither a new VAE nor KV weights (the adapter trainers'
        # refusal), and a full student would distil a teacher that never trained with them.
        ({"lora_rank": 2, "vae": "any/vae"}, "which an LCM-LoRA does not hold"),
        ({"lora_rank": 2, "kv_compress_factor": 2}, "which an LCM-LoRA does not hold"),
        ({"vae": "any/vae"}, "the teacher .* would never have trained with that change"),
        ({"kv_compress_factor": 2}, "the teacher .* would never have trained with that change"),
    ],
)
def test_bad_options_are_named_before_any_step(training_assets, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_lcm_distill(_config(training_assets, tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad" / "checkpoints").exists()
