"""Our PixArtAlphaPipeline and PixArtTransformer2DModel as drop-ins for diffusers', down to the details.

diffusers' classes are the oracle: the deprecated ``mask_feature=`` argument, the "Loaded <name> as <class>" log of
``from_pretrained``, the error for a missing weight variant, and the random weights of a model built after
``torch.manual_seed``.
"""

from __future__ import annotations

import logging

import diffusers
import numpy as np
import pytest
import torch
from diffusers.utils import logging as diffusers_logging
from tolerances import FORWARD

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.tiny import make_components

PROMPT = "a red circle above a blue square"
CALL = dict(num_inference_steps=2, height=64, width=64, use_resolution_binning=False, output_type="np")


def pipelines() -> tuple[PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline]:
    """Ours and diffusers' pipeline on the same tiny components."""
    components = make_components()
    ours, theirs = PixArtAlphaPipeline(**components), diffusers.PixArtAlphaPipeline(**components)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def generate(pipe, **kwargs) -> np.ndarray:
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **CALL, **kwargs).images


# ------------------------------------------------------------------------------------------ mask_feature
def test_mask_feature_is_accepted_with_diffusers_deprecation_warning():
    ours, theirs = pipelines()
    expected = generate(ours)
    with pytest.warns(FutureWarning, match="mask_feature") as our_warnings:
        images = generate(ours, mask_feature=True)
    with pytest.warns(FutureWarning, match="mask_feature") as their_warnings:
        generate(theirs, mask_feature=True)
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in their_warnings]
    assert np.array_equal(images, expected)  # ignored, as in diffusers

    with pytest.warns(FutureWarning, match="mask_feature"):
        ours.encode_prompt(PROMPT, mask_feature=False)


def test_unknown_keyword_still_raises():
    ours, _ = pipelines()
    with pytest.raises(TypeError, match=r"__call__\(\) got unexpected keyword arguments \['guidence_scale'\]"):
        generate(ours, guidence_scale=2.0)
    with pytest.raises(TypeError, match=r"encode_prompt\(\) got unexpected keyword arguments \['max_length'\]"):
        ours.encode_prompt(PROMPT, max_length=10)


# ------------------------------------------------------------------------------------------ loading
@pytest.fixture
def pipeline_log():
    """The INFO records of diffusers' pipeline loader (where diffusers logs "Loaded <name> as <class> ...")."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = diffusers_logging.get_logger("diffusers.pipelines.pipeline_utils")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_loading_logs_every_component_as_diffusers_does(tmp_path, pipeline_log):
    ours, _ = pipelines()
    ours.save_pretrained(tmp_path)
    loaded = PixArtAlphaPipeline.from_pretrained(tmp_path)
    logged = [record.getMessage() for record in pipeline_log if record.getMessage().startswith("Loaded ")]
    assert f"Loaded transformer as PixArtTransformer2DModel from `transformer` subfolder of {tmp_path}." in logged
    assert sorted(message.split()[1] for message in logged) == sorted(loaded.components)
    assert type(loaded.transformer) is PixArtTransformer2DModel


def test_wrong_variant_raises_diffusers_error(tmp_path):
    ours, theirs = pipelines()
    ours.save_pretrained(tmp_path)
    with pytest.raises(ValueError) as their_error:
        diffusers.PixArtAlphaPipeline.from_pretrained(tmp_path, variant="fp16")
    with pytest.raises(ValueError) as our_error:
        PixArtAlphaPipeline.from_pretrained(tmp_path, variant="fp16")
    assert str(our_error.value) == str(their_error.value)
    assert "You are trying to load the model files of the `variant=fp16`" in str(our_error.value)


def test_saved_variant_loads(tmp_path):
    ours, _ = pipelines()
    ours.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = PixArtAlphaPipeline.from_pretrained(tmp_path, variant="fp16")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is PixArtTransformer2DModel
    assert np.array_equal(generate(loaded), generate(ours))  # same weights, same code


# ------------------------------------------------------------------------------------------ seeded weights
TINY = dict(num_attention_heads=3, attention_head_dim=8, num_layers=2, cross_attention_dim=24, patch_size=2)


@pytest.mark.parametrize(
    "config",
    [
        dict(sample_size=8, caption_channels=32, in_channels=4, out_channels=8),  # diffusers' pipeline test model
        dict(sample_size=128, caption_channels=16),  # micro-conditions on (the 1024px models' default)
        dict(sample_size=16, caption_channels=16, use_additional_conditions=True, norm_elementwise_affine=True),
        dict(sample_size=32, caption_channels=None, out_channels=None, use_additional_conditions=False),
        dict(sample_size=8, caption_channels=16, cross_attention_dim=None),  # no cross-attention at all
    ],
    ids=["pipeline-test", "micro-conditions", "micro-conditions-affine-norms", "no-caption-projection", "no-attn2"],
)
def test_same_seed_gives_diffusers_weights(config):
    config = {**TINY, **config}
    torch.manual_seed(0)
    ours = PixArtTransformer2DModel(**config)
    torch.manual_seed(0)
    theirs = diffusers.PixArtTransformer2DModel(**config)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)  # same keys, created in the same order
    for key, value in their_state.items():
        assert torch.equal(ours_state[key], value), key  # the same random draws: bit-exact
    # and the next draw after construction is the same, so seeded code that continues gets the same numbers
    torch.manual_seed(0)
    PixArtTransformer2DModel(**config)
    after_ours = torch.randn(4)
    torch.manual_seed(0)
    diffusers.PixArtTransformer2DModel(**config)
    assert torch.equal(after_ours, torch.randn(4))
    # and they compute the same, but for float32 rounding (our attention sums in another order)
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(2, ours.config.in_channels, 16, 12, generator=g),
        encoder_hidden_states=torch.randn(2, 5, config["caption_channels"] or 24, generator=g),
        timestep=torch.tensor([10, 500]),
        added_cond_kwargs={"resolution": torch.tensor([[64.0, 64.0]] * 2), "aspect_ratio": torch.tensor([[1.0]] * 2)},
    )
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).sample, theirs(**inputs).sample, atol=FORWARD, rtol=FORWARD)


def test_set_default_attn_processor_restores_ours():
    """diffusers' processors can be set and the default put back, as on diffusers' model."""
    from diffusers.models.attention_processor import AttnProcessor

    from diffusers_pixart.models.attention import PixArtAttnProcessor
    from diffusers_pixart.tiny import make_transformer

    model = make_transformer()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(2, 4, 16, 16, generator=g),
        encoder_hidden_states=torch.randn(2, 5, 32, generator=g),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        timestep=torch.tensor([10, 500]),
    )
    with torch.no_grad():
        expected = model(**inputs).sample
        model.set_attn_processor(AttnProcessor())
        # diffusers' processor: the same math with explicit softmax(QK^T)V, so float32 rounding only
        torch.testing.assert_close(model(**inputs).sample, expected, atol=FORWARD, rtol=FORWARD)
        model.set_default_attn_processor()
        assert all(type(p) is PixArtAttnProcessor for p in model.attn_processors.values())
        assert torch.equal(model(**inputs).sample, expected)  # the same code again


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline),
        (PixArtTransformer2DModel, diffusers.PixArtTransformer2DModel),
    ],
    ids=["pipeline", "transformer"],
)
def test_every_public_attribute_of_diffusers_class_exists(ours, theirs):
    """Code that calls a public method of diffusers' class finds it on ours (e.g. prepare_extra_step_kwargs)."""
    missing = {name for name in dir(theirs) if not name.startswith("_")} - set(dir(ours))
    assert not missing


def test_prepare_extra_step_kwargs_gives_what_the_scheduler_takes():
    ours, theirs = pipelines()
    generator = torch.Generator()
    for scheduler in (diffusers.DDIMScheduler(), diffusers.DPMSolverMultistepScheduler()):
        ours.scheduler = theirs.scheduler = scheduler
        assert ours.prepare_extra_step_kwargs(generator, 0.3) == theirs.prepare_extra_step_kwargs(generator, 0.3)
