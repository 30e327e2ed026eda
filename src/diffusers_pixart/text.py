"""Caption text processing and T5 encoding, shared by the pipeline and by training: both see the same tokens.

Prompts are lower-cased and stripped, or, with ``clean_caption`` (the pipeline's default), cleaned by the recipe
PixArt-alpha was trained with (DeepFloyd-IF's: URLs, HTML, odd punctuation). diffusers' implementation is reused, so
a prompt becomes exactly the same tokens here as in diffusers' pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import PixArtAlphaPipeline as _DiffusersPixArtAlphaPipeline


class CaptionProcessingMixin:
    """``_text_preprocessing(texts, clean_caption)`` and the cleaning it relies on, for pipelines."""

    bad_punct_regex = _DiffusersPixArtAlphaPipeline.bad_punct_regex
    _text_preprocessing = _DiffusersPixArtAlphaPipeline._text_preprocessing
    _clean_caption = _DiffusersPixArtAlphaPipeline._clean_caption


def preprocess_captions(texts: str | list[str], clean_caption: bool = True) -> list[str]:
    """The texts as the pipeline feeds them to the tokenizer (cleaned when ``clean_caption``, else lower-cased)."""
    return CaptionProcessingMixin()._text_preprocessing(texts, clean_caption=clean_caption)


def encode_prompts(
    tokenizer, text_encoder, texts: Sequence[str], max_length: int = 120, clean_caption: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 caption embeddings as PixArt-alpha uses them: padded to ``max_length`` tokens (120), truncated beyond.

    The texts are first processed as the pipeline processes prompts (:func:`preprocess_captions`:
    cleaned with ``clean_caption``, else lower-cased), so that training and generation see the same tokens.
    Call it under ``torch.no_grad()`` for a frozen encoder.

    Returns:
        ``prompt_embeds`` (B, max_length, C) in the encoder's dtype on its device, and ``prompt_attention_mask``
        (B, max_length) long, 1 for real tokens (with the end token) and 0 for padding.
    """
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("`texts` must be a list of strings.")
    tokens = tokenizer(
        preprocess_captions(list(texts), clean_caption=clean_caption),
        max_length=max_length,
        padding="max_length",
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(text_encoder.device)
    embeds = text_encoder(tokens.input_ids.to(text_encoder.device), attention_mask=mask)[0]
    return embeds, mask.long()
