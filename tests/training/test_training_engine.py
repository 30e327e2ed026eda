"""The training engine on a tiny pipeline: null caption, resume, checkpoints, validation, config, bad input."""

import json
from contextlib import nullcontext

import pytest
import torch
from safetensors.torch import load_file

from diffusers_pixart import tiny
from diffusers_pixart.models.attention import caption_cache
from diffusers_pixart.training.checkpoints import find_checkpoint, list_checkpoints
from diffusers_pixart.training.conditioning import CaptionConditioning
from diffusers_pixart.training.config import TrainingConfig, build_parser, parse_config
from diffusers_pixart.training.diffusion import IDDPMDiffusion
from diffusers_pixart.training.engine import train
from diffusers_pixart.training.logs import read_loss_curve
from diffusers_pixart.training.parameters import AllParameters


def raw_batches(n=3, texts=("a red circle", "a blue square on the left"), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1, "text": list(texts)} for _ in range(n)]


def make_config(out, **overrides):
    values = dict(
        output_dir=str(out),
        resolution=32,
        train_batch_size=2,
        max_train_steps=2,
        lr_warmup_steps=1,
        learning_rate=1e-3,
        checkpointing_steps=100,
        validation_steps=0,
        report_to="none",
        ema_decay=0.9,
    )
    values.update(overrides)
    return TrainingConfig(**values)


def train_on_captions(config, pipe, data):
    """Stage 2's composition (captions, every transformer weight, the pipeline's objective) on ``data``; returns the
    result and the conditioning part."""
    conditioning = CaptionConditioning(config, pipe)
    objective = IDDPMDiffusion.for_pipeline(pipe, config.prediction_type, config.snr_gamma)
    return train(config, pipe, data, conditioning, AllParameters(pipe), objective), conditioning


def checkpoint_weights(path):
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= atol, diff


def test_null_caption_is_the_pipelines_unconditional_branch_and_dropout_uses_it(tmp_path):
    pipe = tiny.make_pipeline()
    _, conditioning = train_on_captions(
        make_config(tmp_path / "a", caption_dropout=1.0, max_train_steps=1),
        pipe,
        raw_batches(texts=("a red circle", "two cats")),
    )
    _, _, negative, negative_mask = pipe.encode_prompt("a cat", do_classifier_free_guidance=True, negative_prompt="")
    torch.testing.assert_close(conditioning.null_caption[0], negative, rtol=0, atol=0)
    torch.testing.assert_close(conditioning.null_caption[1], negative_mask, rtol=0, atol=0)

    # Dropping every caption trains exactly like captions that are empty strings.
    train_on_captions(
        make_config(tmp_path / "b", caption_dropout=0.0, max_train_steps=1),
        tiny.make_pipeline(),
        raw_batches(texts=("", "")),
    )
    assert_same_weights(
        checkpoint_weights(tmp_path / "a/checkpoints/checkpoint-1"),
        checkpoint_weights(tmp_path / "b/checkpoints/checkpoint-1"),
    )


def test_resume_matches_an_uninterrupted_run_and_restores_ema(tmp_path):
    data = raw_batches(n=3)
    full, _ = train_on_captions(
        make_config(tmp_path / "full", max_train_steps=4, checkpointing_steps=2), tiny.make_pipeline(), data
    )
    part = tmp_path / "part"
    train_on_captions(make_config(part, max_train_steps=2, checkpointing_steps=2), tiny.make_pipeline(), data)
    pipe = tiny.make_pipeline()
    with torch.no_grad():  # different initial weights: the trained state must come from the checkpoint
        for param in pipe.transformer.parameters():
            param.add_(1.0)
    config = make_config(part, max_train_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest")
    resumed, _ = train_on_captions(config, pipe, data)
    assert resumed.progress.state_dict() == full.progress.state_dict() == {"step": 4, "epoch": 1, "batches_in_epoch": 1}
    assert_same_weights(
        checkpoint_weights(tmp_path / "full/checkpoints/checkpoint-4"),
        checkpoint_weights(part / "checkpoints/checkpoint-4"),
    )
    for a, b in zip(full.ema.shadow_params, resumed.ema.shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The saved pipeline holds the EMA weights.
    saved = load_file(str(part / "pipeline/transformer/diffusion_pytorch_model.safetensors"))
    names = [name for name, _ in pipe.transformer.named_parameters()]
    for name, ema_param in zip(names, resumed.ema.shadow_params):
        torch.testing.assert_close(saved[name], ema_param, rtol=0, atol=0)
    assert not torch.equal(saved[names[0]], checkpoint_weights(part / "checkpoints/checkpoint-4")[names[0]])


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("constant_with_warmup", [1e-3, 1e-3, 1e-3]), ("linear", [1e-3, 5e-4, 0.0]), ("cosine", [1e-3, 5e-4, 0.0])],
)
def test_lr_schedule_warms_up_then_follows_the_named_schedule(tmp_path, schedule, expected):
    config = make_config(
        tmp_path, max_train_steps=3, lr_warmup_steps=1, lr_scheduler=schedule, report_to="tensorboard", logging_steps=1
    )
    train_on_captions(config, tiny.make_pipeline(), raw_batches(n=3))
    logged = read_loss_curve(tmp_path, "lr")  # the lr after each step
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [lr for _, lr in logged] == pytest.approx(expected, abs=1e-9)


def test_checkpoint_limit_accumulation_and_unfinished_checkpoints(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints/.tmp-checkpoint-9").mkdir(parents=True)  # what a kill during a save leaves behind
    config = make_config(out, max_train_steps=3, checkpointing_steps=1, checkpoints_total_limit=2)
    config.gradient_accumulation_steps = 2
    result, _ = train_on_captions(config, tiny.make_pipeline(), raw_batches(n=5))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]
    assert result.progress.state_dict() == {"step": 3, "epoch": 1, "batches_in_epoch": 1}  # 6 micro-batches
    assert find_checkpoint("latest", out / "checkpoints").name == "checkpoint-3"


def test_precomputed_features_and_micro_conditions(tmp_path):
    pipe = tiny.make_pipeline(use_additional_conditions=True)
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(["a red circle", "a cat"], do_classifier_free_guidance=False)
    batch = {
        "latents": torch.randn(2, 4, 4, 4),
        "prompt_embeds": embeds,
        "prompt_attention_mask": mask,
        "resolution": torch.tensor([[32.0, 32.0], [40.0, 30.0]]),
        "aspect_ratio": torch.tensor([[1.0], [1.0]]),
    }
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    train_on_captions(make_config(tmp_path, use_ema=False), pipe, [batch])
    after = pipe.transformer.state_dict()
    # The micro-condition embedders are trained: the conditions reached the model.
    assert not torch.equal(before["adaln_single.emb.resolution_embedder.linear_1.weight"],
                           after["adaln_single.emb.resolution_embedder.linear_1.weight"])  # fmt: skip
    del batch["aspect_ratio"]
    with pytest.raises(ValueError, match="aspect_ratio"):
        train_on_captions(make_config(tmp_path / "b"), tiny.make_pipeline(use_additional_conditions=True), [batch])


def test_validation_grid_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(tmp_path, max_train_steps=2, validation_steps=2, report_to="tensorboard", logging_steps=1)
    config.validation_prompts = ["a red circle", "a cat"]
    config.validation_inference_steps = 2
    train_on_captions(config, tiny.make_pipeline(), raw_batches())
    from PIL import Image

    grid = Image.open(tmp_path / "validation/step-0000002.png")
    assert grid.size == (64, 32)
    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    runs = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    tags = {}
    for run in runs:
        acc = EventAccumulator(str(run), size_guidance={"images": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
    assert {"loss", "mse", "vb", "lr", "samples_per_second"} <= tags["scalars"]
    assert any(name.startswith("validation") for name in tags["images"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resolution": 40}, "multiple of the patch size 2 x the VAE down-sampling 8 = 16"),
        ({"resume_from_checkpoint": "/nonexistent/checkpoint-3"}, "no such checkpoint folder"),
        ({"caption_dropout": 1.5}, "caption_dropout"),
    ],
)
def test_bad_options_fail_before_training(tmp_path, change, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train_on_captions(make_config(tmp_path, **change), tiny.make_pipeline(), raw_batches())
    assert not (tmp_path / "checkpoints").exists()


def test_bad_data_fails_before_the_first_step(tmp_path):
    pipe = tiny.make_pipeline()
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    with pytest.raises(ValueError, match="empty"):
        train_on_captions(make_config(tmp_path), pipe, [])
    with pytest.raises(ValueError, match=r"lack \['text'\]"):
        train_on_captions(make_config(tmp_path), pipe, [{"pixel_values": torch.zeros(2, 3, 32, 32)}])
    after = pipe.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "checkpoints").exists()


def test_incompatible_checkpoint_shapes(tmp_path):
    train_on_captions(make_config(tmp_path, max_train_steps=1), tiny.make_pipeline(), raw_batches(n=1))
    wider = tiny.make_pipeline(num_attention_heads=3)
    with pytest.raises(ValueError, match="does not fit this transformer.*checkpoint \\(24,\\) vs model \\(36,\\)"):
        train_on_captions(make_config(tmp_path, resume_from_checkpoint="latest"), wider, raw_batches(n=1))


def test_config_file_flags_and_help(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\nlearning_rate: 0.001\nuse_ema: false\nvalidation_prompts: [a cat, a dog]\n")
    config = parse_config(TrainingConfig, ["--config", str(path), "--learning_rate", "3e-4"])
    assert (config.learning_rate, config.use_ema, config.validation_prompts) == (3e-4, False, ["a cat", "a dog"])
    assert config.output_dir == "out" and config.adam_epsilon == 1e-10 and config.caption_dropout == 0.1
    (tmp_path / "run.json").write_text(json.dumps({"output_dir": "o", "learning_rat": 1}))
    with pytest.raises(ValueError, match="learning_rat"):
        parse_config(TrainingConfig, ["--config", str(tmp_path / "run.json")])
    with pytest.raises(ValueError, match="--output_dir"):
        parse_config(TrainingConfig, [])
    help_text = build_parser(TrainingConfig, "t").format_help()
    for name in TrainingConfig.__dataclass_fields__:
        assert f"--{name}" in help_text


def test_the_saved_pipeline_samples_with_the_trained_prediction_type(tmp_path):
    from diffusers_pixart import PixArtAlphaPipeline

    pipe = tiny.make_pipeline()
    assert pipe.scheduler.config.prediction_type == "epsilon"
    config = make_config(tmp_path, prediction_type="v_prediction", max_train_steps=1)
    saved = PixArtAlphaPipeline.from_pretrained(train_on_captions(config, pipe, raw_batches(n=1))[0].path)
    assert type(saved.scheduler) is type(pipe.scheduler)
    assert saved.scheduler.config.prediction_type == "v_prediction"
    # A fine-tune of that pipeline keeps its target unless told otherwise.
    assert IDDPMDiffusion.for_pipeline(saved).prediction_type == "v_prediction"
    assert IDDPMDiffusion.for_pipeline(tiny.make_pipeline()).prediction_type == "epsilon"
    assert IDDPMDiffusion.for_pipeline(saved, "epsilon").prediction_type == "epsilon"


def test_dropping_caption_padding_trains_the_same_weights_on_fewer_tokens(tmp_path):
    weights, tokens = {}, {}
    for drop in (True, False):
        pipe = tiny.make_pipeline()
        seen = []
        pipe.transformer.transformer_blocks[0].attn2.register_forward_hook(
            lambda module, args, kwargs, out, seen=seen: seen.append(kwargs["encoder_hidden_states"].shape[1]),
            with_kwargs=True,
        )
        config = make_config(tmp_path / str(drop), drop_caption_padding=drop, checkpointing_steps=2)
        train_on_captions(config, pipe, raw_batches(n=2))
        weights[drop] = checkpoint_weights(tmp_path / str(drop) / "checkpoints/checkpoint-2")
        tokens[drop] = set(seen)
    assert tokens[False] == {120} and max(tokens[True]) < 10  # "a blue square on the left" and EOS
    # Adam's first steps move every weight by about the learning rate (1e-3), whatever the gradient's size.
    assert_same_weights(weights[True], weights[False], atol=2e-5)
    # The gradients themselves are the same up to float summation order.
    pipe = tiny.make_pipeline()
    with torch.no_grad():
        embeds, mask = pipe.encode_prompt("a red circle", do_classifier_free_guidance=False)[::2]
    inputs = dict(encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=torch.tensor([500]))
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    grads = []
    for context in (nullcontext(), caption_cache(drop_padding=True)):
        pipe.transformer.zero_grad()
        with context:
            pipe.transformer(latents, **inputs).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in pipe.transformer.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) < 1e-6


def test_mixed_precision_saves_the_frozen_components_unrounded(tmp_path, bf16_cpu_attention):
    """bf16 training casts the frozen VAE and T5 to bf16; the saved pipeline still has their exact weights (a cast
    back to float32 would round them), and the trained transformer is saved in float32."""
    from accelerate.state import AcceleratorState

    from diffusers_pixart import PixArtAlphaPipeline

    pipe = tiny.make_pipeline()
    originals = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()} for name in ("vae", "text_encoder")
    }
    # accelerate keeps one mixed-precision setting per process (as accelerate's own tests, reset it around the run).
    AcceleratorState._reset_state()
    try:
        result, _ = train_on_captions(
            make_config(tmp_path, mixed_precision="bf16", max_train_steps=1), pipe, raw_batches(n=1)
        )
        saved = PixArtAlphaPipeline.from_pretrained(result.path)
    finally:
        AcceleratorState._reset_state()
    for name, state in originals.items():
        assert_same_weights(getattr(saved, name).state_dict(), state)
    assert saved.transformer.dtype == torch.float32


def test_lora_on_captions_is_a_composition_of_the_parts(tmp_path):
    """The coming LoRA trainer on captioned data: captions, a LoRA adapter, the IDDPM objective; only the adapter
    trains and the result is its weights file."""
    from peft import LoraConfig

    from diffusers_pixart.hub import LORA_WEIGHT_NAME
    from diffusers_pixart.training.parameters import LoraAdapter

    pipe = tiny.make_pipeline()
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    with pytest.raises(ValueError, match=r"active adapters \[\]"):
        LoraAdapter(pipe)
    pipe.transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_v"]))
    with pytest.raises(ValueError, match="train the adapter with LoraAdapter"):
        AllParameters(pipe)
    config = make_config(tmp_path, max_train_steps=2, checkpointing_steps=2)
    conditioning, parameters = CaptionConditioning(config, pipe), LoraAdapter(pipe)
    result = train(config, pipe, raw_batches(), conditioning, parameters, IDDPMDiffusion.for_pipeline(pipe))
    assert result.path == tmp_path / "lora" and (result.path / LORA_WEIGHT_NAME).is_file()
    after = pipe.transformer.state_dict()
    lora = [k for k in after if ".lora_" in k]
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if ".lora_" not in k}
    assert lora and base.keys() == before.keys() and all(torch.equal(base[k], v) for k, v in before.items())
    assert set(checkpoint_weights(tmp_path / "checkpoints/checkpoint-2")) == set(lora)
