"""Stage 3 (high aesthetics): buckets, micro-conditions starting at zero, a larger grid with interpolated positions."""

import pytest
import torch
import yaml

from diffusers_pixart import tiny
from diffusers_pixart.data.buckets import bucket_table
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.toy.world import make_dataset
from diffusers_pixart.training.conditioning import CaptionConditioning
from diffusers_pixart.training.config import build_parser
from diffusers_pixart.training.stages import Stage3Config, main_stage3, prepare_stage3_transformer

SIZES = {(64, 64), (96, 48), (48, 96)}  # the toy images: ratios 1, 2 and 0.5 at 64px


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage3")
    tiny.make_pipeline(sample_size=4).save_pretrained(root / "stage2")  # a 32px "stage-2" model, no micro-conditions
    make_dataset(root / "toy", n=12, seed=0, resolution=64, aspect_ratios=[1.0, 2.0, 0.5], style="aesthetic")
    return root


def write_config(path, assets, out, **overrides):
    values = {
        "pretrained_model_name_or_path": str(assets / "stage2"),
        "train_data": str(assets / "toy"),
        "output_dir": str(out),
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 0,
        "validation_steps": 0,
        "report_to": "none",
        "shuffle_buffer_size": 12,
    }
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def test_new_micro_conditions_leave_the_outputs_unchanged():
    loaded = tiny.make_transformer(sample_size=4)  # non-zero weights everywhere, no micro-conditions
    model = prepare_stage3_transformer(loaded, sample_size=4)
    assert model.use_additional_conditions and model.config.interpolation_scale == 1
    emb = model.adaln_single.emb
    assert not emb.resolution_embedder.linear_2.weight.any() and emb.resolution_embedder.linear_1.weight.any()
    assert not emb.aspect_ratio_embedder.linear_2.weight.any()
    latents, caption, t = torch.randn(2, 4, 4, 8), torch.randn(2, 6, 32), torch.tensor([10, 700])
    added = {"resolution": torch.tensor([[32.0, 64.0], [40.0, 80.0]]), "aspect_ratio": torch.tensor([[0.5], [0.5]])}
    with torch.no_grad():
        before = loaded(latents, encoder_hidden_states=caption, timestep=t).sample
        after = model(latents, encoder_hidden_states=caption, timestep=t, added_cond_kwargs=added).sample
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # Not an identity for ever: the zero linear has a gradient, so the size and ratio start to matter after a step.
    model(latents, encoder_hidden_states=caption, timestep=t, added_cond_kwargs=added).sample.square().sum().backward()
    assert emb.resolution_embedder.linear_2.weight.grad.abs().sum() > 0


def test_a_grid_twice_as_large_interpolates_the_trained_positions():
    loaded = tiny.make_transformer(sample_size=4)  # a 2 x 2 patch grid, interpolation scale 1
    model = prepare_stage3_transformer(loaded, sample_size=8)
    assert (model.config.sample_size, model.config.interpolation_scale) == (8, 2)
    old = loaded.pos_embed.position_table(2, 2, torch.device("cpu")).reshape(2, 2, -1)
    new = model.pos_embed.position_table(4, 4, torch.device("cpu")).reshape(4, 4, -1)
    torch.testing.assert_close(new[::2, ::2], old)  # every other new position is an old one
    assert not torch.allclose(new[1, 1], old[0, 0]) and not torch.allclose(new[1, 1], old[1, 1])  # in between
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded_state.items())
    assert prepare_stage3_transformer(loaded, 8, interpolation_scale=1).config.interpolation_scale == 1
    with pytest.raises(ValueError, match="would drop their"):
        prepare_stage3_transformer(model, 8, micro_conditions=False)
    with pytest.raises(ValueError, match="divisible by 3"):
        prepare_stage3_transformer(tiny.make_transformer(sample_size=4, attention_head_dim=13), 8)


def test_stage3_trains_one_bucket_per_batch_and_saves_a_pipeline_for_any_aspect(assets, tmp_path, monkeypatch):
    batches = []
    encode = CaptionConditioning.encode

    def recording_encode(self, batch, device):
        assert self.pipeline.transformer.use_additional_conditions
        batches.append({k: batch[k].clone() for k in ("pixel_values", "resolution", "aspect_ratio")})
        return encode(self, batch, device)

    monkeypatch.setattr(CaptionConditioning, "encode", recording_encode)
    out = tmp_path / "out"
    assert main_stage3(["--config", str(write_config(tmp_path / "run.yaml", assets, out))]) == 0

    table = {float(key): tuple(int(v) for v in sides) for key, sides in bucket_table(64).items()}
    assert len(batches) == 4
    for batch in batches:
        height, width = batch["pixel_values"].shape[-2:]
        ratio = batch["aspect_ratio"][0].item()
        assert table[ratio] == (height, width)  # one bucket: its ratio and size
        assert torch.equal(batch["aspect_ratio"], torch.full((2, 1), ratio))
        for original in batch["resolution"].tolist():  # the original size, nearest to the bucket's ratio
            assert tuple(original) in SIZES and abs(original[0] / original[1] - ratio) < 0.3
    assert len({tuple(b["pixel_values"].shape[-2:]) for b in batches}) > 1

    pipe = PixArtAlphaPipeline.from_pretrained(out / "pipeline")
    config = pipe.transformer.config
    assert (config.sample_size, config.interpolation_scale, config.use_additional_conditions) == (8, 2, True)
    image = pipe("a red circle", height=48, width=96, num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 48, 96, 3)


def test_stage3_options_and_bad_input(assets, tmp_path, capsys):
    assert all(action.help for action in build_parser(Stage3Config, "stage 3")._actions)
    cases = [
        ({"resolution": 40}, "multiple of the patch size"),
        ({"resolution": 48}, "No aspect-ratio buckets for resolution 48"),
        ({"interpolation_scale": -1.0}, "must be positive"),
        ({"caption_column": "caption"}, "Column 'caption' is not in the dataset"),
        ({"features": str(assets / "toy")}, "exactly one of --train_data"),
    ]
    for overrides, message in cases:
        config = write_config(tmp_path / "bad.yaml", assets, tmp_path / "out", **overrides)
        assert main_stage3(["--config", str(config)]) == 2, overrides
        assert message in capsys.readouterr().err, overrides
        assert not (tmp_path / "out/checkpoints").exists()
