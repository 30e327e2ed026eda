"""Training PixArt-Σ with the stage scripts: 300 caption tokens, a swapped VAE, KV compression, a resolution raise with
Σ's interpolation scales, 2K buckets, resume, and the bad inputs that must fail before the first step."""

from dataclasses import replace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffusers_pixart import tiny
from diffusers_pixart.data.features import extract_dataset_features
from diffusers_pixart.diffusers_compat import ASPECT_RATIO_2048_BIN
from diffusers_pixart.pipelines.auto import pipeline_class
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_sigma import PixArtSigmaPipeline
from diffusers_pixart.toy.world import make_dataset
from diffusers_pixart.training.conditioning import CaptionConditioning
from diffusers_pixart.training.controlnet import ControlNetConfig
from diffusers_pixart.training.distillation import DistillConfig
from diffusers_pixart.training.dreambooth import DreamBoothConfig
from diffusers_pixart.training.engine import make_accelerator
from diffusers_pixart.training.lora import LoraTrainingConfig, check_lora_options
from diffusers_pixart.training.stages import (
    Stage2Config,
    Stage3Config,
    load_pipeline,
    main_stage2,
    main_stage3,
    make_loader,
    prepare_stage3_transformer,
    with_sequence_length,
)

#: The SDXL VAE's latent scaling, which Σ uses (sd-vae-ft-ema's is 0.18215).
SDXL_SCALING = 0.13025


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny Σ pipeline (256px grid of 4 latent pixels: a 32px model) and the same as an α one, an SDXL-shaped VAE
    with Σ's scaling, a VAE with 8 latent channels, and 8 toy images at 32px."""
    root = tmp_path_factory.mktemp("sigma-training")
    PixArtSigmaPipeline(**tiny.make_components(sample_size=4)).save_pretrained(root / "sigma")
    PixArtAlphaPipeline(**tiny.make_components(sample_size=4)).save_pretrained(root / "alpha")
    vae = tiny.make_vae(seed=1)
    vae.register_to_config(scaling_factor=SDXL_SCALING)
    vae.save_pretrained(root / "sdxl_vae")
    tiny.make_vae(latent_channels=8).save_pretrained(root / "vae8")
    make_dataset(root / "toy", n=8, seed=0, resolution=32)
    return root


def write_config(path, assets, out, **overrides):
    values = {
        "pretrained_model_name_or_path": str(assets / "sigma"),
        "train_data": str(assets / "toy"),
        "output_dir": str(out),
        "resolution": 32,
        "train_batch_size": 2,
        "max_train_steps": 2,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 1,
        "validation_steps": 0,
        "report_to": "none",
        "shuffle_buffer_size": 8,
        "max_sequence_length": 300,
    }
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def test_sigma_stage2_with_300_tokens_a_new_vae_and_kv_compression_saves_a_sigma_pipeline(
    assets, tmp_path, monkeypatch
):
    shapes = []
    encode = CaptionConditioning.encode

    def recording_encode(self, batch, device):
        condition = encode(self, batch, device)
        assert self.pipeline.vae.config.scaling_factor == SDXL_SCALING  # the swapped VAE encodes the images
        shapes.append((tuple(condition["encoder_hidden_states"].shape), tuple(self.null_caption[0].shape)))
        return condition

    monkeypatch.setattr(CaptionConditioning, "encode", recording_encode)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "run.yaml",
        assets,
        out,
        vae=str(assets / "sdxl_vae"),
        kv_compress_factor=2,
        kv_compress_layers=[1],
    )
    assert main_stage2(["--config", str(config)]) == 0
    assert shapes == [((2, 300, 32), (1, 300, 32))] * 2  # captions and the null caption: 300 tokens

    assert pipeline_class(out / "pipeline") is PixArtSigmaPipeline
    pipe = PixArtSigmaPipeline.from_pretrained(out / "pipeline")
    assert pipe.vae.config.scaling_factor == SDXL_SCALING
    config = pipe.transformer.config
    assert (config.kv_compress_factor, config.kv_compress_layers, config.kv_compress_sampling) == (2, [1], "conv")
    blocks = pipe.transformer.transformer_blocks
    assert getattr(blocks[0].attn1, "kv_compress", None) is None
    conv = blocks[1].attn1.kv_compress.conv.weight
    assert not torch.allclose(conv, torch.full_like(conv, 0.25))  # started as the window mean, then trained
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    ("base", "given", "tokens"),
    [("sigma", None, 300), ("alpha", None, 120), ("sigma", 64, 64)],
    ids=["sigma-default", "alpha-default", "given-wins"],
)
def test_the_caption_length_is_the_base_family_s_unless_given(assets, tmp_path, monkeypatch, base, given, tokens):
    shapes = []
    encode = CaptionConditioning.encode

    def recording_encode(self, batch, device):
        condition = encode(self, batch, device)
        shapes.append((condition["encoder_hidden_states"].shape[1], self.null_caption[0].shape[1]))
        return condition

    monkeypatch.setattr(CaptionConditioning, "encode", recording_encode)
    base_path = str(assets / base)
    config = write_config(
        tmp_path / "run.yaml",
        assets,
        tmp_path / "out",
        pretrained_model_name_or_path=base_path,
        max_sequence_length=given,
        max_train_steps=1,
    )
    assert main_stage2(["--config", str(config)]) == 0
    assert shapes == [(tokens, tokens)]  # the captions and the null caption
    # Every trainer built on Stage2Config has the same rule (the same function resolves it).
    for config_class in (Stage2Config, Stage3Config, DreamBoothConfig, ControlNetConfig, DistillConfig):
        config = config_class(output_dir="x", pretrained_model_name_or_path=base_path, max_sequence_length=given)
        assert with_sequence_length(config).max_sequence_length == tokens, config_class
    config = LoraTrainingConfig(output_dir="x", pretrained_model_name_or_path=base_path, max_sequence_length=given)
    assert with_sequence_length(config).max_sequence_length == tokens
    assert config.max_sequence_length == given  # a copy: the given config is left as it is


def test_features_of_another_caption_length_are_refused(assets, tmp_path):
    features = tmp_path / "features"
    extract_dataset_features(str(assets / "toy"), str(assets / "sigma"), features, resolution=32, max_length=300)
    config = Stage2Config(
        pretrained_model_name_or_path=str(assets / "sigma"), features=str(features), output_dir=str(tmp_path / "o")
    )
    assert isinstance(load_pipeline(config), PixArtSigmaPipeline)  # Σ's default, 300 tokens: the folder's length
    with pytest.raises(ValueError, match="hold captions of 300 T5 tokens, but this run uses 120"):
        load_pipeline(replace(config, max_sequence_length=120))
    with pytest.raises(ValueError, match="--max_sequence_length must be at least 1, got 0"):
        with_sequence_length(replace(config, max_sequence_length=0))


def test_resume_with_kv_compression_matches_an_uninterrupted_run(assets, tmp_path):
    options = dict(vae=str(assets / "sdxl_vae"), kv_compress_factor=2, checkpointing_steps=2, ema_decay=0.9)
    full = write_config(tmp_path / "full.yaml", assets, tmp_path / "full", **{**options, "max_train_steps": 4})
    assert main_stage2(["--config", str(full)]) == 0
    split = tmp_path / "split"
    first = write_config(tmp_path / "first.yaml", assets, split, **options)
    assert main_stage2(["--config", str(first)]) == 0  # 2 steps, then the same run resumed to 4
    second = write_config(
        tmp_path / "second.yaml", assets, split, **{**options, "max_train_steps": 4, "resume_from_checkpoint": "latest"}
    )
    assert main_stage2(["--config", str(second)]) == 0
    a = load_file(str(tmp_path / "full/checkpoints/checkpoint-4/model.safetensors"))
    b = load_file(str(split / "checkpoints/checkpoint-4/model.safetensors"))
    assert any("kv_compress" in key for key in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_resolution_raise_keeps_sigma_s_interpolation_scales():
    # Σ's grids: 0.5 / 1 / 2 / 4 at 256 / 512 / 1024 / 2048 px (latent sample sizes 32 / 64 / 128 / 256).
    sigma_256 = tiny.make_transformer(sample_size=32, interpolation_scale=0.5)
    for sample_size, scale in ((64, 1), (128, 2), (256, 4)):
        raised = prepare_stage3_transformer(sigma_256, sample_size, micro_conditions=False)
        assert raised.config.interpolation_scale == scale and isinstance(raised.config.interpolation_scale, int)
        assert not raised.use_additional_conditions
    old = sigma_256.pos_embed.position_table(16, 16, torch.device("cpu")).reshape(16, 16, -1)
    new = prepare_stage3_transformer(sigma_256, 64, micro_conditions=False)
    table = new.pos_embed.position_table(32, 32, torch.device("cpu")).reshape(32, 32, -1)
    torch.testing.assert_close(table[::2, ::2], old)  # every other position of the raised grid is a trained one


def test_sigma_stage3_raises_the_resolution_with_kv_compression_and_no_micro_conditions(assets, tmp_path):
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "run.yaml", assets, out, resolution=64, kv_compress_factor=2, kv_compress_sampling="conv_no_norm"
    )
    assert main_stage3(["--config", str(config)]) == 0
    pipe = PixArtSigmaPipeline.from_pretrained(out / "pipeline")
    config = pipe.transformer.config
    assert (config.sample_size, config.interpolation_scale, config.use_additional_conditions) == (8, 2, False)
    assert config.kv_compress_factor == 2 and config.kv_compress_sampling == "conv_no_norm"
    assert all(block.attn1.kv_compress is not None for block in pipe.transformer.transformer_blocks)


def test_2k_buckets_come_from_sigma_s_2048_table(assets, tmp_path):
    config = Stage3Config(
        pretrained_model_name_or_path=str(assets / "sigma"),
        train_data=str(assets / "toy"),
        output_dir=str(tmp_path / "out"),
        resolution=2048,
        train_batch_size=1,
        shuffle_buffer_size=0,
    )
    loader = make_loader(config, make_accelerator(config), caption_column="text", multi_scale=True)
    batch = next(iter(loader))
    height, width = batch["pixel_values"].shape[-2:]
    assert [float(height), float(width)] == ASPECT_RATIO_2048_BIN[str(batch["aspect_ratio"][0].item())]
    assert (height, width) == (2048, 2048)  # the square toy images go to the 1.0 bucket


def test_bad_inputs_fail_before_the_first_step_with_nothing_written(assets, tmp_path, capsys):
    features = tmp_path / "features"  # extracted with the pipeline's own VAE, not the swapped one
    extract_dataset_features(str(assets / "toy"), str(assets / "sigma"), features, resolution=32, max_length=300)
    cases = [
        ({"vae": str(assets / "vae8")}, "has 8 latent channels but the transformer takes 4"),
        ({"kv_compress_factor": 0}, "--kv_compress_factor must be 1 (off) or an integer >= 2"),
        ({"kv_compress_layers": [0]}, "--kv_compress_layers needs --kv_compress_factor >= 2"),
        ({"kv_compress_factor": 2, "kv_compress_layers": [0, 5]}, "must be distinct block indices in [0, 2)"),
        ({"vae": str(tmp_path / "missing")}, "no AutoencoderKL there"),
        (
            {"vae": str(assets / "sdxl_vae"), "features": str(features), "train_data": None},
            "extract them again with this VAE",
        ),
    ]
    out = tmp_path / "out"
    for main in (main_stage2, main_stage3):
        for overrides, message in cases:
            config = write_config(tmp_path / "bad.yaml", assets, out, **overrides)
            assert main(["--config", str(config)]) == 2, overrides
            assert message in capsys.readouterr().err, overrides
            assert not out.exists()
    for option in ({"vae": str(assets / "sdxl_vae")}, {"kv_compress_factor": 2}):
        with pytest.raises(ValueError, match="which an adapter's weights file does not hold"):
            check_lora_options(LoraTrainingConfig(output_dir=str(out), **option))


def test_a_model_that_compresses_keeps_its_kv_weights_unless_other_settings_are_asked(assets, tmp_path):
    components = tiny.make_components(sample_size=4)
    components["transformer"].enable_kv_compression(2, layers=[1])
    with torch.no_grad():
        components["transformer"].transformer_blocks[1].attn1.kv_compress.conv.weight.add_(0.5)  # "trained"
    PixArtSigmaPipeline(**components).save_pretrained(tmp_path / "compressed")
    trained = components["transformer"].transformer_blocks[1].attn1.kv_compress.conv.weight
    config = Stage3Config(pretrained_model_name_or_path=str(tmp_path / "compressed"), output_dir=str(tmp_path / "o"))
    same = load_pipeline(replace(config, kv_compress_factor=2, kv_compress_layers=[1]))
    torch.testing.assert_close(same.transformer.transformer_blocks[1].attn1.kv_compress.conv.weight, trained)
    with pytest.raises(ValueError, match="already compresses keys and values"):
        load_pipeline(replace(config, kv_compress_factor=2, kv_compress_layers=[0, 1]))
