"""Pivotal tuning: the T5 input-embedding rows of chosen tokens train with the transformer's adapter.

``examples/train_lora.py --train_text_encoder_embeddings`` (:func:`~.lora.train_lora`). A trigger word the frozen
T5 never learned to read as what the images show (a new colour, style or subject) can only be reached by the
adapter through whatever T5 makes of it; pivotal tuning also moves the word's own input embedding, so that the same
word means the new concept wherever a prompt uses it. Only the rows of the chosen tokens change: every other row of
T5's (shared) input embedding, and all of T5's other weights, stay bit-identical.

Three parts compose the engine's (:func:`~.engine.train`) parts, adding no step of their own:

- :class:`TokenEmbeddings`: the trained rows, ``original + scale * delta`` with ``delta`` (K, C) the trained tensor
  (zero at the start: the model is the base model at step 0). ``scale`` is ``--embedding_learning_rate /
  --learning_rate``: Adam-type optimizers step every parameter by about the learning rate, so the rows move at the
  embedding rate while the adapter keeps its own (the engine's optimizer has one learning rate); weight decay pulls
  the rows toward their original values, not toward zero;
- :class:`TokenCaptions` wraps the run's caption conditioning: its ``encode`` gives the caption tokens (the engine
  encodes without gradients, but the rows need them), caption dropout replaces them by the null caption's tokens,
  and validation renders with the rows written into T5;
- :class:`AdapterWithEmbeddings` wraps a :class:`~.parameters.LoraAdapter`: the trained module is
  :class:`TransformerWithEmbeddings` (the transformer and the rows; its forward runs the frozen T5 on the tokens
  through the rows, then the transformer), so the optimizer, the gradient clipping, the EMA and the checkpoints see
  the adapter and ``delta`` together; the result is the adapter file and, next to it,
  ``loaders.TEXT_ENCODER_EMBEDDINGS_NAME`` (``{token: row}``), which ``pipe.load_lora_weights(folder)`` writes into
  the pipeline's T5 (:func:`diffusers_pixart.loaders.load_text_encoder_embeddings`).

Precomputed features cannot train the rows (their T5 embeddings are fixed): the trainer refuses ``--features``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..loaders import TEXT_ENCODER_EMBEDDINGS_NAME
from ..text import tokenize_prompts
from .conditioning import FEATURE_KEYS, RAW_KEYS, CaptionConditioning
from .parameters import LoraAdapter, trainable_state, transformer_forward

#: SentencePiece's word-boundary piece: shared by many words, it is not trained as a word's token.
WORD_BOUNDARY = "\u2581"


def embedding_token_ids(tokenizer: Any, trigger_words: Sequence[str], tokens: Sequence[str] = ()) -> dict[str, int]:
    """The tokens whose input-embedding rows train, by name, with their ids: the tokens of each of ``trigger_words``
    as ``tokenizer`` splits them, and the vocabulary ``tokens`` named as the tokenizer writes them (e.g.
    ``"▁retro"`` for a SentencePiece word).

    Raises:
        ValueError: nothing to train; a named token the vocabulary lacks; a trigger word read as ``<unk>`` (its row is
            every unknown word's); a special token (padding, end, unknown) or the bare word-boundary piece, which
            every caption or many words share.
    """
    vocab = tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        variants = {token: (WORD_BOUNDARY + token, token.lstrip(WORD_BOUNDARY)) for token in missing}
        close = {token: [t for t in forms if t in vocab] for token, forms in variants.items()}
        hint = "; ".join(f"{token!r}: try {found}" for token, found in close.items() if found)
        raise ValueError(
            f"--train_embedding_tokens {missing}: the tokenizer has no such token{f' ({hint})' if hint else ''}. Name "
            "tokens as the tokenizer writes them (tokenizer.tokenize(word)), or pass the words as --trigger_words."
        )
    ids = {token: vocab[token] for token in tokens}
    for word in trigger_words:
        word_ids = tokenizer(word, add_special_tokens=False).input_ids
        ids.update(zip(tokenizer.convert_ids_to_tokens(word_ids), word_ids))
    if not ids:
        raise ValueError(
            "--train_text_encoder_embeddings needs tokens to train: give --trigger_words or --train_embedding_tokens."
        )
    special = set(tokenizer.all_special_ids)
    shared = [token for token, index in ids.items() if index in special or token == WORD_BOUNDARY]
    if shared:
        raise ValueError(
            f"Cannot train the embedding rows of {shared}: special tokens (padding, end, unknown) and the bare "
            "word-boundary piece are part of every caption or of many words. Choose words the tokenizer knows as whole "
            "tokens."
        )
    return ids


class TokenEmbeddings(nn.Module):
    """Trained input-embedding rows of some tokens of a T5 encoder (see the module docstring).

    Args:
        text_encoder: the (frozen) T5 encoder; its input embedding is read, never changed, here.
        token_ids: the tokens to train, by name, with their ids (:func:`embedding_token_ids`).
        scale: the rows are ``original + scale * delta``; ``--embedding_learning_rate / --learning_rate``.

    Raises:
        ValueError: an id outside the embedding, or ``scale`` not positive.
    """

    def __init__(self, text_encoder: nn.Module, token_ids: Mapping[str, int], scale: float = 1.0):
        super().__init__()
        weight = text_encoder.get_input_embeddings().weight
        outside = {token: index for token, index in token_ids.items() if not 0 <= index < weight.shape[0]}
        if outside:
            raise ValueError(f"Token ids {outside} are outside the text encoder's {weight.shape[0]} embedding rows.")
        if not scale > 0:
            raise ValueError(f"The embedding rows' scale must be positive, got {scale}.")
        self.tokens = list(token_ids)
        self.scale = float(scale)
        self.register_buffer("ids", torch.tensor(list(token_ids.values()), dtype=torch.long), persistent=False)
        self.register_buffer("original", weight.detach()[self.ids].float().clone(), persistent=False)
        self.delta = nn.Parameter(torch.zeros_like(self.original))

    def rows(self) -> torch.Tensor:
        """The trained rows (K, C) in float32, in the order of ``tokens``."""
        return self.original + self.scale * self.delta

    def inputs_embeds(self, embedding: nn.Embedding, input_ids: torch.Tensor) -> torch.Tensor:
        """T5's input embeddings (B, L, C) of ``input_ids`` (B, L) with the trained rows in place of the originals
        (differentiable in ``delta``), in the embedding's dtype."""
        embeds = embedding(input_ids)
        match = input_ids[..., None] == self.ids  # (B, L, K)
        trained = (match.to(self.delta.dtype) @ self.rows()).to(embeds.dtype)
        return torch.where(match.any(dim=-1, keepdim=True), trained, embeds)

    def encode(self, text_encoder: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """T5's caption embeddings (B, L, C) of the tokens ``input_ids`` (B, L) with keep-mask ``mask`` (B, L), read
        through the trained rows."""
        embeds = self.inputs_embeds(text_encoder.get_input_embeddings(), input_ids)
        return text_encoder(inputs_embeds=embeds, attention_mask=mask)[0]

    @contextlib.contextmanager
    def written_into(self, text_encoder: nn.Module) -> Iterator[None]:
        """Inside, ``text_encoder``'s own input embedding holds the trained rows (for a pipeline call); the original
        rows are back after."""
        weight = text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            ids = self.ids.to(weight.device)
            saved = weight[ids].clone()
            weight[ids] = self.rows().to(weight.device, weight.dtype)
        try:
            yield
        finally:
            with torch.no_grad():
                weight[ids] = saved

    def save(self, path: Path) -> None:
        """Write the rows as ``{token: row (C,)}`` float32 safetensors (what ``load_text_encoder_embeddings`` reads)."""
        rows = self.rows().detach().cpu()
        save_file({token: rows[i].clone() for i, token in enumerate(self.tokens)}, str(path), metadata={"format": "pt"})


class TransformerWithEmbeddings(nn.Module):
    """The module a pivotal-tuning run trains: the transformer (with its adapter) and the :class:`TokenEmbeddings`.
    Its forward encodes the caption tokens with the frozen T5 through the trained rows, then runs the transformer.
    T5 is held, not registered: its mode, parameters and state stay the pipeline's (a frozen component)."""

    def __init__(self, transformer: nn.Module, embeddings: TokenEmbeddings, text_encoder: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.embeddings = embeddings
        self._frozen_text_encoder = (text_encoder,)

    @property
    def config(self) -> Any:
        """The transformer's config (the EMA keeps it)."""
        return self.transformer.config

    def enable_gradient_checkpointing(self) -> None:
        """The transformer's gradient checkpointing."""
        self.transformer.enable_gradient_checkpointing()

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        caption_ids: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    ) -> Any:
        """The transformer's output for noisy latents (B, C, h, w) at ``timestep`` (B,) and caption tokens (B, L)."""
        captions = self.embeddings.encode(self._frozen_text_encoder[0], caption_ids, encoder_attention_mask)
        return self.transformer(
            hidden_states,
            timestep=timestep,
            encoder_hidden_states=captions.to(self.transformer.dtype),
            encoder_attention_mask=encoder_attention_mask,
            added_cond_kwargs=added_cond_kwargs,
        )


class TokenCaptions:
    """A caption conditioning (:class:`~.conditioning.CaptionConditioning`) whose condition is the caption tokens,
    for :class:`TransformerWithEmbeddings`: ``encode`` tokenizes as the pipeline does, ``drop`` puts in the null
    caption's tokens (T5 then gives exactly the null caption), validation renders with the rows written into T5.
    Everything else is the wrapped conditioning's.

    Args:
        captions: the run's caption conditioning (its pipeline has the tokenizer and T5).
        embeddings: the trained rows.
    """

    raw_keys = RAW_KEYS
    feature_keys = FEATURE_KEYS

    def __init__(self, captions: CaptionConditioning, embeddings: TokenEmbeddings):
        self.captions = captions
        self.embeddings = embeddings
        self.null_tokens: tuple[torch.Tensor, torch.Tensor] | None = None

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and keep-mask (B, L) of ``texts``, as the pipeline tokenizes prompts."""
        length = self.captions.config.max_sequence_length
        return tokenize_prompts(self.captions.pipeline.tokenizer, texts, max_length=length)

    def prepare(self) -> None:
        self.captions.prepare()
        self.null_tokens = self.tokenize([""])

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        if "text" not in batch:
            raise ValueError(
                "Training text-encoder embeddings needs the captions' text in every batch (keys present: "
                f"{sorted(batch)}): precomputed T5 embeddings cannot change with the rows."
            )
        self.captions.check_batch(batch)

    def encode(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        """Caption tokens and keep-mask (B, L) on ``device``, and the micro-conditions (or None)."""
        ids, mask = self.tokenize(list(batch["text"]))
        return {
            "caption_ids": ids.to(device),
            "encoder_attention_mask": mask.to(device),
            "added_cond_kwargs": self.captions.micro_conditions(batch, device),
        }

    def drop(self, condition: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
        """The null caption's tokens where ``mask`` (B,) is set."""
        ids, keep = condition["caption_ids"], condition["encoder_attention_mask"]
        null_ids, null_keep = (t.to(ids.device) for t in self.null_tokens)
        return {
            **condition,
            "caption_ids": torch.where(mask[:, None], null_ids, ids),
            "encoder_attention_mask": torch.where(mask[:, None], null_keep, keep),
        }

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        with self.embeddings.written_into(self.captions.pipeline.text_encoder):
            return self.captions.sample_validation(device)


class AdapterWithEmbeddings:
    """A :class:`~.parameters.LoraAdapter` and :class:`TokenEmbeddings` trained together (see the module docstring):
    the module is :class:`TransformerWithEmbeddings`, checkpoints hold the adapter and ``delta``, the result is the
    adapter's folder with ``loaders.TEXT_ENCODER_EMBEDDINGS_NAME`` next to the weights (also pushed).

    Args:
        adapter: the transformer's adapter part (its pipeline has the text encoder).
        embeddings: the trained rows of that text encoder.
    """

    frozen_components = LoraAdapter.frozen_components
    strict_checkpoints = False

    def __init__(self, adapter: LoraAdapter, embeddings: TokenEmbeddings):
        text_encoder = adapter.pipeline.text_encoder
        if text_encoder is None:
            raise ValueError("Training text-encoder embeddings needs the pipeline's text encoder.")
        self.adapter = adapter
        self.embeddings = embeddings
        self.result_name = adapter.result_name
        self.module = TransformerWithEmbeddings(adapter.module, embeddings, text_encoder)

    def prepare(self) -> None:
        """The adapter's, and ``delta`` trains in float32."""
        self.adapter.prepare()
        self.embeddings.float().requires_grad_(True)

    def checkpointed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The adapter's weights and ``delta`` of ``state``."""
        return trainable_state(self.module, state)

    forward = staticmethod(transformer_forward)

    def save(self, folder: Path) -> None:
        self.adapter.save(folder)
        self.embeddings.save(Path(folder) / TEXT_ENCODER_EMBEDDINGS_NAME)

    def push(self, repo_id: str, samples: Sequence[tuple[str, Any]], card_info: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="pixart-embeddings-") as staging:
            path = Path(staging) / TEXT_ENCODER_EMBEDDINGS_NAME
            self.embeddings.save(path)
            self.adapter.push(repo_id, samples, card_info, extra_files={TEXT_ENCODER_EMBEDDINGS_NAME: path})
