"""PixArtSigmaPipeline against diffusers' PixArtSigmaPipeline as the oracle, on tiny components built in code.

The Σ pipeline is the α pipeline's code with Σ's defaults, so :mod:`test_pipeline` covers the shared behaviour; here:
the images at each of Σ's four aspect-ratio tables (256, 512, 1024, 2048 px), the 300-token default, the signature,
the official Σ Hub layouts, and that the generic loaders pick Σ for a Σ folder.
"""

from __future__ import annotations

import inspect
import json

import diffusers
import numpy as np
import pytest
from test_pipeline import PROMPTS, generate
from test_pipeline import pipelines as alpha_pipelines
from tolerances import IMAGES

from diffusers_pixart import PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel
from diffusers_pixart.pipelines.auto import family_of, pipeline_class
from diffusers_pixart.pipelines.pixart_sigma import with_defaults


def pipelines(**transformer_overrides) -> tuple[PixArtSigmaPipeline, diffusers.PixArtSigmaPipeline]:
    """Ours and diffusers' Σ pipeline on the same components; diffusers' gets its own transformer class."""
    return alpha_pipelines(PixArtSigmaPipeline, diffusers.PixArtSigmaPipeline, **transformer_overrides)


def max_difference(ours, theirs, **call) -> float:
    a, b = np.asarray(generate(ours, **call)), np.asarray(generate(theirs, **call))
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(
    "call",
    [
        {},  # defaults: 300 tokens, binning at the 256px table, CFG 4.5
        {"height": 192, "width": 320},  # non-square, binned then resized back
        {"num_images_per_prompt": 2},
        {"guidance_scale": 1.0},
        {"negative_prompt": "a black cat", "clean_caption": False},
        {"max_sequence_length": 120},
        {"output_type": "latent"},
    ],
)
def test_images_match_diffusers(call):
    assert max_difference(*pipelines(), **call) <= IMAGES


@pytest.mark.parametrize(
    "sample_size, patch_size, call",
    [
        (64, 4, {"height": 384, "width": 640}),  # the 512 px table
        (128, 4, {"height": 768, "width": 1024, "guidance_scale": 1.0}),  # the 1024 px table
        # The 2048 px table (sample size 256): the binned size is 1408 x 2816 px, so patches of 8 (968 tokens) and
        # latents out (a VAE decode at that size would take most of a minute here).
        (256, 8, {"height": 1024, "width": 2048, "output_type": "latent", "num_inference_steps": 2}),
    ],
)
def test_each_resolution_table_matches_diffusers(sample_size, patch_size, call):
    ours, theirs = pipelines(sample_size=sample_size, patch_size=patch_size, interpolation_scale=sample_size / 64)
    shapes = []
    ours(
        PROMPTS[0],
        num_inference_steps=1,
        output_type="latent",
        callback_on_step_end=lambda pipe, i, t, tensors: shapes.append(tuple(tensors["latents"].shape)) or {},
        **{k: v for k, v in call.items() if k in ("height", "width")},
    )
    tables = diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma
    table = {
        32: tables.ASPECT_RATIO_256_BIN,
        64: tables.ASPECT_RATIO_512_BIN,
        128: tables.ASPECT_RATIO_1024_BIN,
        256: tables.ASPECT_RATIO_2048_BIN,
    }[sample_size]
    height, width = table[min(table, key=lambda ratio: abs(float(ratio) - call["height"] / call["width"]))]
    assert shapes == [(1, 4, int(height) // 8, int(width) // 8)]
    assert max_difference(ours, theirs, prompt=PROMPTS[0], **call) <= IMAGES


def test_defaults_match_diffusers_signatures():
    for method in ("__call__", "encode_prompt"):
        ours = inspect.signature(getattr(PixArtSigmaPipeline, method)).parameters
        theirs = inspect.signature(getattr(diffusers.PixArtSigmaPipeline, method)).parameters
        for name, param in theirs.items():
            if name != "kwargs":
                assert name in ours and ours[name].default == param.default, (method, name)
    assert inspect.signature(PixArtSigmaPipeline.__call__).parameters["max_sequence_length"].default == 300
    # the α pipeline keeps its own defaults: the Σ ones are a copy of the function, not an edit of it
    assert inspect.signature(PixArtAlphaPipeline.__call__).parameters["max_sequence_length"].default == 120
    assert inspect.signature(PixArtAlphaPipeline.encode_prompt).parameters["max_sequence_length"].default == 120


def test_captions_are_300_tokens_and_long_prompts_are_not_cut_at_120():
    ours, _ = pipelines()
    embeds, mask, negative, _ = ours.encode_prompt(PROMPTS[0])
    assert embeds.shape == (1, 300, 32) and negative.shape == (1, 300, 32)
    long_prompt = " ".join(["red circle"] * 100)  # 200 words, one token each, plus </s>
    _, mask, _, _ = ours.encode_prompt(long_prompt)
    assert int(mask.sum()) == 201


def test_with_defaults_rejects_unknown_names():
    with pytest.raises(ValueError, match="max_length"):
        with_defaults(PixArtAlphaPipeline.encode_prompt, max_length=300)


def test_sigma_fixes_samplers_and_callbacks():
    """The α pipeline's additions hold for Σ: one-step DPM-Solver, samplers by name, step-end callbacks, errors."""
    ours, _ = pipelines()
    assert generate(ours, num_inference_steps=1).shape == (2, 256, 256, 3)
    ours.set_scheduler("sa")
    steps = []
    generate(ours, num_inference_steps=2, callback_on_step_end=lambda p, i, t, tensors: steps.append(i) or {})
    assert steps == [0, 1]
    with pytest.raises(ValueError, match="guidance_scale"):
        generate(ours, guidance_scale=-1.0)


def official_sigma_folder(theirs: diffusers.PixArtSigmaPipeline, folder, transformer_class: str):
    """Save diffusers' Σ pipeline as the official repos are laid out: ``model_index.json`` naming
    ``PixArtSigmaPipeline`` and the transformer as ``transformer_class`` (``Transformer2DModel`` in
    ``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS``, ``PixArtTransformer2DModel`` in folders saved by later diffusers)."""
    theirs.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "PixArtSigmaPipeline"
    index["transformer"] = ["diffusers", transformer_class]
    (folder / "model_index.json").write_text(json.dumps(index))
    config = json.loads((folder / "transformer" / "config.json").read_text())
    config["_class_name"] = transformer_class
    (folder / "transformer" / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("transformer_class", ["Transformer2DModel", "PixArtTransformer2DModel"])
def test_official_sigma_layout_loads_our_classes(tmp_path, transformer_class):
    _, theirs = pipelines()
    official_sigma_folder(theirs, tmp_path / "official", transformer_class)
    assert pipeline_class(tmp_path / "official") is PixArtSigmaPipeline
    loaded = PixArtSigmaPipeline.from_pretrained(tmp_path / "official")
    assert type(loaded.transformer) is PixArtTransformer2DModel
    loaded.set_progress_bar_config(disable=True)
    assert np.abs(generate(loaded) - generate(theirs)).max() <= IMAGES

    loaded.save_pretrained(tmp_path / "ours")
    saved_index = json.loads((tmp_path / "ours" / "model_index.json").read_text())
    assert saved_index["_class_name"] == "PixArtSigmaPipeline"
    assert saved_index["transformer"] == ["diffusers_pixart", "PixArtTransformer2DModel"]
    again = PixArtSigmaPipeline.from_pretrained(tmp_path / "ours")
    assert type(again) is PixArtSigmaPipeline and type(again.transformer) is PixArtTransformer2DModel
    # diffusers' own loader reads our folder: its Σ pipeline class, with our transformer (resolved through our package)
    generic = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "ours")
    assert type(generic) is diffusers.PixArtSigmaPipeline
    assert type(generic.transformer) is PixArtTransformer2DModel


def test_family_and_pipeline_class_of_an_alpha_folder(tmp_path):
    ours, _ = pipelines()
    PixArtAlphaPipeline(**ours.components).save_pretrained(tmp_path)
    assert pipeline_class(tmp_path) is PixArtAlphaPipeline
    assert family_of(ours) == "sigma" and family_of(diffusers.PixArtSigmaPipeline) == "sigma"
    assert family_of("PixArtAlphaPipeline") == "alpha"
