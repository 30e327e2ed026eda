"""Small PixArt components built in code, with no download.

Tests, benchmarks, the CLI's fallback model and the toy world use these: a T5 tokenizer from a word list, a small T5
encoder, a small ``AutoencoderKL`` with the real VAE's 8x down-sampling, and a small transformer. Everything is
deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from transformers import T5Config, T5EncoderModel, T5Tokenizer

#: Words of the default tiny vocabulary: enough for test prompts about simple scenes.
DEFAULT_WORDS = (
    "a an the of and with on in above below left right to next small large big tiny "
    "red green blue yellow orange purple white black pink cyan gray brown "
    "circle square triangle star ring cross heart shape shapes object objects background "
    "cat dog tree house sky sea car photo painting of one two three picture image"
).split()


def make_tokenizer(words: Iterable[str] = DEFAULT_WORDS) -> T5Tokenizer:
    """A T5 tokenizer whose vocabulary is ``<pad>``, ``</s>``, ``<unk>``, the word separator and ``words``.

    Each word is one token; words outside the list become ``<unk>``.
    """
    words = list(dict.fromkeys(w.lower() for w in words))
    if not words:
        raise ValueError("`words` is empty: a tokenizer needs at least one word.")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_text_encoder(
    vocab_size: int, d_model: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0
) -> T5EncoderModel:
    """A randomly initialised T5 v1.1-style encoder (gated-gelu, like t5-v1_1-xxl) of the given size."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        is_encoder_decoder=False,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def make_vae(channels: int = 8, latent_channels: int = 4, seed: int = 0) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` with four levels, so it down-samples by 8 like sd-vae-ft-ema."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(channels,) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(4, channels),
        sample_size=64,
    ).eval()


def tiny_transformer_config(**overrides) -> dict:
    """The config of a two-block PixArt transformer (hidden size 24) for tests.

    The defaults give a 256px model (``sample_size`` 32 latent pixels) with micro-conditions off.
    """
    config = dict(
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=24,
        caption_channels=32,
        sample_size=32,
        patch_size=2,
        use_additional_conditions=False,
    )
    config.update(overrides)
    return config


def make_transformer(seed: int = 0, **overrides):
    """A randomly initialised tiny :class:`PixArtTransformer2DModel` (see :func:`tiny_transformer_config`).

    Non-zero weights everywhere (also the zero-initialised projections), so that every path changes the output.
    """
    from .models.pixart_transformer import PixArtTransformer2DModel

    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**tiny_transformer_config(**overrides))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.1)
    return model.eval()


def make_components(seed: int = 0, words: Iterable[str] = DEFAULT_WORDS, **transformer_overrides) -> dict:
    """Every component of a tiny :class:`PixArtAlphaPipeline`: tokenizer, text encoder, VAE, transformer, scheduler."""
    tokenizer = make_tokenizer(words)
    transformer = make_transformer(seed=seed, **transformer_overrides)
    text_encoder = make_text_encoder(len(tokenizer), d_model=transformer.config.caption_channels, seed=seed)
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": make_vae(seed=seed),
        "transformer": transformer,
        "scheduler": DPMSolverMultistepScheduler(),
    }


def make_pipeline(seed: int = 0, **transformer_overrides):
    """A tiny randomly initialised :class:`PixArtAlphaPipeline`. Its images are noise: it exists to exercise code."""
    from .pipelines.pixart_alpha import PixArtAlphaPipeline

    return PixArtAlphaPipeline(**make_components(seed=seed, **transformer_overrides))
