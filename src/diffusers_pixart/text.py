"""Caption text processing and T5 encoding, shared by the pipeline and by training: both see the same tokens.

Prompts are lower-cased and stripped, or, with ``clean_caption`` (the pipeline's default), cleaned by the recipe
PixArt-alpha was trained with (DeepFloyd-IF's: URLs, HTML, odd punctuation). diffusers' implementation is reused, so
a prompt becomes exactly the same tokens here as in diffusers' pipeline.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .diffusers_compat import CaptionProcessingMixin  # diffusers' own caption cleaning, as pipeline methods


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
    input_ids, mask = tokenize_prompts(tokenizer, texts, max_length, clean_caption)
    mask = mask.to(text_encoder.device)
    embeds = text_encoder(input_ids.to(text_encoder.device), attention_mask=mask)[0]
    return embeds, mask


def tokenize_prompts(
    tokenizer, texts: Sequence[str], max_length: int = 120, clean_caption: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The T5 tokens of :func:`encode_prompts`: ``input_ids`` (B, max_length) and ``attention_mask`` (B, max_length),
    both long on the CPU, of the processed ``texts`` padded to ``max_length`` (truncated beyond)."""
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
    return tokens.input_ids.long(), tokens.attention_mask.long()


class TextEncodingCache:
    """T5 encodings of recent texts, reused across pipeline calls (the negative prompt "", a prompt asked again).

    Entries hold for one tokenizer, text encoder state and length: any change of the encoder's weights (in place,
    dtype or device) or of ``max_length`` empties the cache. Only used with gradients off. Safe to share between
    threads (one pipeline serving concurrent calls): one encodes at a time.

    Args:
        size: how many texts to keep (least recently used go first).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._state: tuple = ()
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # copies and pickles make a lock of their own
        return {**self.__dict__, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def encode(self, tokenizer, text_encoder, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_prompts`` of processed ``texts`` (no further cleaning): (B, max_length, C) and (B, max_length)."""
        if torch.is_grad_enabled():
            return encode_prompts(tokenizer, text_encoder, texts, max_length, clean_caption=False)
        with self._lock:
            return self._encode_cached(tokenizer, text_encoder, texts, max_length)

    def _encode_cached(
        self, tokenizer, text_encoder, texts: list[str], max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
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


#: What :func:`add_tokens` accepts as a new word: lower case letters and digits (what survives caption cleaning).
NEW_TOKEN_PATTERN = re.compile(r"[a-z0-9]+")


def add_tokens(tokenizer, text_encoder, words: Sequence[str], seed: int = 0) -> list[int]:
    """Add each of ``words`` to ``tokenizer`` as one new token, with a new row in ``text_encoder``'s embeddings.

    The DreamBooth identifier of a word-level tokenizer (the toy world's, :func:`.tiny.make_tokenizer`), which maps
    any unknown word to ``<unk>``: ``"a sks circle"`` becomes ``[▁a, sks, ▁circle]`` and the frozen T5 gives ``sks``
    an embedding of its own. The tokens match whole words only. The existing ids and embedding rows are unchanged;
    each new row is drawn (seeded) from a normal with the per-channel mean and standard deviation of the existing
    rows. Both save and load with ``save_pretrained``/``from_pretrained`` as usual.

    Args:
        tokenizer: a ``transformers`` tokenizer (changed in place).
        text_encoder: its text encoder (T5; its input embeddings are resized in place).
        words: the new words, lower case letters and digits (the pipeline lower-cases prompts).
        seed: seed of the new embedding rows.

    Returns:
        The ids of the new tokens, in the order of ``words``.

    Raises:
        ValueError: no words, a word repeated, not of lower case letters and digits, or already one token of the
            vocabulary; or a text encoder whose embeddings do not match the tokenizer.
    """
    from transformers import AddedToken

    words = list(words)
    if not words:
        raise ValueError("No words to add.")
    if len(set(words)) != len(words):
        raise ValueError(f"{words} repeats a word.")
    vocab = tokenizer.get_vocab()
    for word in words:
        if not isinstance(word, str) or not NEW_TOKEN_PATTERN.fullmatch(word):
            raise ValueError(
                f"New token {word!r}: use lower case letters and digits only (prompts are lower-cased and cleaned)."
            )
        if word in vocab or f"\u2581{word}" in vocab:
            raise ValueError(f"{word!r} is already a token of the vocabulary: pick a word the tokenizer lacks.")
    embeddings = text_encoder.get_input_embeddings()
    if embeddings.num_embeddings < len(tokenizer):
        raise ValueError(
            f"The text encoder has {embeddings.num_embeddings} embedding rows for a tokenizer of {len(tokenizer)} "
            "tokens: they do not belong together."
        )
    old_rows = embeddings.weight.detach().clone()
    tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=True) for word in words])
    ids = tokenizer.convert_tokens_to_ids(words)
    if max(ids) >= embeddings.num_embeddings:  # else the encoder already had spare rows (T5 pads to 32128)
        text_encoder.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    mean, std = old_rows[: len(vocab)].float().mean(0), old_rows[: len(vocab)].float().std(0)
    rows = mean + std * torch.randn((len(ids), old_rows.shape[1]), generator=generator)
    with torch.no_grad():
        weight = text_encoder.get_input_embeddings().weight
        weight[: old_rows.shape[0]] = old_rows
        weight[ids] = rows.to(weight.dtype)
    return ids
