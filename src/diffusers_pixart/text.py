"""Caption text processing and T5 encoding, shared by the pipeline and by training: both see the same tokens.

Prompts are lower-cased and stripped, or, with ``clean_caption`` (the pipeline's default), cleaned by the recipe
PixArt-alpha was trained with (DeepFloyd-IF's: URLs, HTML, odd punctuation). diffusers' implementation is reused, so
a prompt becomes exactly the same tokens here as in diffusers' pipeline.
"""

from __future__ import annotations

from collections import OrderedDict
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


class TextEncodingCache:
    """T5 encodings of recent texts, reused across pipeline calls (the negative prompt "", a prompt asked again).

    Entries hold for one tokenizer, text encoder state and length: any change of the encoder's weights (in place,
    dtype or device) or of ``max_length`` empties the cache. Only used with gradients off.

    Args:
        size: how many texts to keep (least recently used go first).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._state: tuple = ()
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def encode(self, tokenizer, text_encoder, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_prompts`` of processed ``texts`` (no further cleaning): (B, max_length, C) and (B, max_length)."""
        if torch.is_grad_enabled():
            return encode_prompts(tokenizer, text_encoder, texts, max_length, clean_caption=False)
        state = (id(tokenizer), max_length, *((p.data_ptr(), p._version) for p in text_encoder.parameters()))
        if state != self._state:
            self._state, self._entries = state, OrderedDict()
        missing = [text for text in dict.fromkeys(texts) if text not in self._entries]
        if missing:
            embeds, mask = encode_prompts(tokenizer, text_encoder, missing, max_length, clean_caption=False)
            self._entries.update((text, (embeds[i], mask[i])) for i, text in enumerate(missing))
        found = [self._entries[text] for text in texts]
        for text in texts:
            self._entries.move_to_end(text)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return torch.stack([embeds for embeds, _ in found]), torch.stack([mask for _, mask in found])
