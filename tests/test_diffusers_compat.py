"""The diffusers internals of :mod:`diffusers_pixart.diffusers_compat` still exist and behave as relied on.

Each test names the internal it checks: when a diffusers upgrade fails one, the failure says what changed and the
module's comment says what uses it.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, ModelMixin
from safetensors import safe_open

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart import diffusers_compat as compat
from diffusers_pixart.tiny import make_components


def has_parameters(function, *names: str) -> None:
    """``function`` takes keyword arguments ``names`` (or ``**kwargs``, for a name not in its signature)."""
    parameters = inspect.signature(function).parameters
    missing = [name for name in names if name not in parameters]
    assert not missing, f"{function.__qualname__} no longer takes {missing}: its signature is {parameters}"


def test_loadable_classes_registration_saves_and_loads_our_transformer(tmp_path):
    """``pipeline_loading_utils.LOADABLE_CLASSES``: ``{library: {base class: [save, load]}}``, read on save and load."""
    from diffusers.pipelines import pipeline_loading_utils

    assert pipeline_loading_utils.LOADABLE_CLASSES is compat.LOADABLE_CLASSES
    assert compat.LOADABLE_CLASSES["diffusers_pixart"] == {"ModelMixin": ["save_pretrained", "from_pretrained"]}
    assert compat.LOADABLE_CLASSES["diffusers"]["ModelMixin"] == ["save_pretrained", "from_pretrained"], (
        "LOADABLE_CLASSES changed layout: register_component_library writes diffusers' own entry format"
    )
    PixArtAlphaPipeline(**make_components(num_layers=1)).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers_pixart", "PixArtTransformer2DModel"]
    loaded = DiffusionPipeline.from_pretrained(tmp_path)  # diffusers' own loader resolves our library
    assert isinstance(loaded.transformer, PixArtTransformer2DModel)


def test_retrieve_timesteps_sets_and_returns_the_schedule():
    """``pipeline_pixart_alpha.retrieve_timesteps(scheduler, num_inference_steps, device, timesteps, sigmas)``."""
    has_parameters(compat.retrieve_timesteps, "scheduler", "num_inference_steps", "device", "timesteps", "sigmas")
    scheduler = DPMSolverMultistepScheduler()
    timesteps, steps = compat.retrieve_timesteps(scheduler, 5, "cpu")
    assert steps == 5 and torch.equal(timesteps, scheduler.timesteps) and len(timesteps) == 5
    timesteps, steps = compat.retrieve_timesteps(DDPMScheduler(), None, "cpu", timesteps=[900, 500, 100])
    assert steps == 3 and timesteps.tolist() == [900, 500, 100]
    with pytest.raises(ValueError, match="sigmas"):  # a scheduler whose set_timesteps takes no sigmas
        compat.retrieve_timesteps(DDPMScheduler(), None, "cpu", sigmas=[1.0, 0.5])


@pytest.mark.parametrize(
    ("table", "square"),
    [
        ("ASPECT_RATIO_256_BIN", 256),
        ("ASPECT_RATIO_512_BIN", 512),
        ("ASPECT_RATIO_1024_BIN", 1024),
        ("ASPECT_RATIO_2048_BIN", 2048),
    ],
)
def test_aspect_ratio_tables(table, square):
    """``ASPECT_RATIO_{256,512,1024}_BIN`` (PixArt-alpha's pipeline module), ``ASPECT_RATIO_2048_BIN`` (Sigma's)."""
    bins = getattr(compat, table)
    assert isinstance(bins, dict) and bins["1.0"] == [square, square], f"{table} changed: {bins.get('1.0')}"
    assert all(float(key) > 0 and len(sides) == 2 for key, sides in bins.items()), f"{table} changed layout"
    assert min(map(float, bins)) == 0.25 and max(map(float, bins)) == 4.0, f"{table} changed its range of ratios"


def test_caption_processing_methods():
    """``PixArtAlphaPipeline._text_preprocessing(text, clean_caption)``, ``_clean_caption`` and ``bad_punct_regex``."""
    source = compat._DiffusersPixArtAlphaPipeline
    for name in ("_text_preprocessing", "_clean_caption", "bad_punct_regex"):
        assert hasattr(source, name), f"diffusers' PixArtAlphaPipeline has no {name} any more"
    has_parameters(source._text_preprocessing, "self", "text", "clean_caption")
    has_parameters(source._clean_caption, "self", "caption")
    mixin = compat.CaptionProcessingMixin()  # no pipeline state: the methods work on a bare object
    assert mixin._text_preprocessing(["  A Red CIRCLE ", "B"], clean_caption=False) == ["a red circle", "b"]
    assert mixin._text_preprocessing("A <b>red</b> circle https://example.com", clean_caption=True) == ["a red circle"]


def test_config_init_keys():
    """``ConfigMixin._get_init_keys(input_class)``: the names of ``__init__``'s parameters."""
    keys = compat.config_init_keys(PixArtTransformer2DModel)
    assert isinstance(keys, set) and {"self", "num_layers", "sample_size", "use_additional_conditions"} <= keys


def test_building_blocks_keep_their_parameter_names():
    """``Attention``, ``FeedForward``, ``TimestepEmbedding``, ``Timesteps``, ``LabelEmbedding``: our checkpoints'
    keys are theirs."""
    attention = compat.Attention(query_dim=8, heads=2, dim_head=4, bias=True, out_bias=True, cross_attention_dim=6)
    assert sorted(attention.state_dict()) == [
        "to_k.bias",
        "to_k.weight",
        "to_out.0.bias",
        "to_out.0.weight",
        "to_q.bias",
        "to_q.weight",
        "to_v.bias",
        "to_v.weight",
    ]
    assert attention.to_k.in_features == 6 and attention.heads == 2
    attention.fuse_projections()
    assert hasattr(attention, "to_kv") and getattr(attention, "fused_projections", False), "fuse_projections changed"
    self_attention = compat.Attention(query_dim=8, heads=2, dim_head=4)
    self_attention.fuse_projections()
    assert hasattr(self_attention, "to_qkv"), "Attention.fuse_projections no longer adds to_qkv"
    ff = compat.FeedForward(8, dropout=0.0, activation_fn="gelu-approximate", bias=True)
    assert sorted(ff.state_dict()) == ["net.0.proj.bias", "net.0.proj.weight", "net.2.bias", "net.2.weight"]
    embedder = compat.TimestepEmbedding(in_channels=256, time_embed_dim=8)
    assert sorted(embedder.state_dict()) == ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]
    projection = compat.Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert not list(projection.parameters()) and projection(torch.tensor([0.0, 999.0])).shape == (2, 256)
    labels = compat.LabelEmbedding(3, 8, 0.1)
    assert list(labels.state_dict()) == ["embedding_table.weight"] and labels.embedding_table.weight.shape == (4, 8)
    assert issubclass(PixArtTransformer2DModel, compat.AttentionMixin)
    assert hasattr(compat.AttentionMixin, "attn_processors") and hasattr(compat.AttentionMixin, "set_attn_processor")
    assert torch.equal(compat.Transformer2DModelOutput(sample=torch.ones(1)).sample, torch.ones(1))


def test_sincos_position_table():
    """``get_2d_sincos_pos_embed(embed_dim, grid_size, base_size, interpolation_scale, device, output_type)``."""
    has_parameters(
        compat.get_2d_sincos_pos_embed, "embed_dim", "grid_size", "base_size", "interpolation_scale", "output_type"
    )
    table = compat.get_2d_sincos_pos_embed(8, (2, 3), base_size=2, interpolation_scale=2.0, device="cpu")
    assert isinstance(table, torch.Tensor) and table.shape == (6, 8)
    torch.testing.assert_close(table.double(), official_position_table(8, 2, 3, base_size=2, scale=2.0))


def official_position_table(dim: int, grid_h: int, grid_w: int, base_size: int, scale: float) -> torch.Tensor:
    """The official PixArt code's table: row-major positions over (h, w), each divided by ``grid / base_size`` and
    ``scale``; the first half of the channels embeds w, the second h, each as [sin, cos] of MAE's frequencies."""
    h = torch.arange(grid_h, dtype=torch.float64) / (grid_h / base_size) / scale
    w = torch.arange(grid_w, dtype=torch.float64) / (grid_w / base_size) / scale
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    grid_w_values, grid_h_values = torch.meshgrid(w, h, indexing="xy")  # (grid_h, grid_w) each
    return torch.cat([embed(grid_w_values), embed(grid_h_values)], dim=1)


def test_lora_loader_mixin_is_transformer_only():
    """``SanaLoraLoaderMixin``: the transformer-only LoRA loader our pipelines' mixin subclasses."""
    mixin = compat.SanaLoraLoaderMixin
    assert mixin._lora_loadable_modules == ["transformer"] and mixin.transformer_name == "transformer"
    has_parameters(
        mixin.load_lora_into_transformer,
        "state_dict",
        "transformer",
        "adapter_name",
        "_pipeline",
        "low_cpu_mem_usage",
        "hotswap",
        "metadata",
    )
    state = {"transformer.a.lora_A.weight": torch.zeros(2, 4), "transformer.a.lora_B.weight": torch.zeros(4, 2)}
    loaded = mixin.lora_state_dict(state, return_lora_metadata=True)
    assert isinstance(loaded, tuple) and set(loaded[0]) == set(state), "lora_state_dict(return_lora_metadata=True)"


def test_get_peft_kwargs():
    """``peft_utils.get_peft_kwargs(rank_dict, network_alpha_dict, peft_state_dict, is_unet)``: LoraConfig args."""
    state = {"a.lora_A.weight": torch.zeros(4, 6), "a.lora_B.weight": torch.zeros(6, 4)}
    kwargs = compat.get_peft_kwargs({"^a.lora_B.weight": 4}, {"a.alpha": 8.0}, state, is_unet=True)
    assert kwargs["r"] == 4 and kwargs["lora_alpha"] == 8.0 and list(kwargs["target_modules"]) == ["a"]


def test_write_lora_file(tmp_path):
    """``LoraBaseMixin.pack_weights`` and ``write_lora_layers``: prefixed keys, the config in the metadata."""
    assert compat.LORA_WEIGHT_NAME_SAFE == "pytorch_lora_weights.safetensors"
    config = {"r": 2, "lora_alpha": 2.0, "target_modules": ["a"]}
    compat.write_lora_file(str(tmp_path), {"a.lora_A.weight": torch.ones(2, 4)}, config, "w.safetensors", "transformer")
    with safe_open(tmp_path / "w.safetensors", "pt") as file:
        assert list(file.keys()) == ["transformer.a.lora_A.weight"]
        metadata = json.loads(file.metadata()["lora_adapter_metadata"])
    assert metadata == {f"transformer.{key}": value for key, value in config.items()}


def test_base_class_members_subclasses_use():
    """``DiffusionPipeline._execution_device`` and the class attributes our pipelines set; ``ModelMixin``'s
    ``gradient_checkpointing`` / ``_gradient_checkpointing_func`` set by ``enable_gradient_checkpointing``."""
    assert isinstance(inspect.getattr_static(DiffusionPipeline, "_execution_device"), property)
    for name in ("_optional_components", "model_cpu_offload_seq"):
        assert hasattr(DiffusionPipeline, name), f"DiffusionPipeline.{name} is gone"
    pipe = PixArtAlphaPipeline(**make_components(num_layers=1))
    assert pipe._execution_device == torch.device("cpu")
    model = pipe.transformer
    assert isinstance(model, ModelMixin) and model.gradient_checkpointing is False
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing is True and callable(model._gradient_checkpointing_func)
    calls = []
    model._gradient_checkpointing_func = lambda block, *args: calls.append(block) or block(*args)
    model.train()
    latents = torch.randn(1, 4, 8, 8)
    caption = torch.randn(1, 5, model.config.caption_channels)
    model(latents, encoder_hidden_states=caption, timestep=torch.tensor([10])).sample.sum().backward()
    assert calls, "the model no longer runs its blocks through _gradient_checkpointing_func"


def test_vae_tiling_attributes():
    """``AutoencoderKL.tile_sample_min_size`` / ``tile_latent_min_size``: the tile size its tiled decode reads."""
    from diffusers_pixart.tiny import make_vae

    vae = make_vae()  # scale factor 8
    compat.enable_vae_tiling(vae, 16, 8)
    assert vae.use_tiling and vae.use_slicing
    calls = []
    tiled_decode = vae.tiled_decode
    vae.tiled_decode = lambda z, *args, **kwargs: calls.append(tuple(z.shape)) or tiled_decode(z, *args, **kwargs)
    with torch.no_grad():
        vae.decode(torch.randn(1, vae.config.latent_channels, 2, 2))  # 16 px: one tile, not tiled
        assert not calls, "AutoencoderKL tiles images no larger than tile_sample_min_size"
        vae.decode(torch.randn(1, vae.config.latent_channels, 4, 4))  # 32 px: tiled
    assert calls == [(1, vae.config.latent_channels, 4, 4)], "AutoencoderKL no longer tiles by tile_latent_min_size"
