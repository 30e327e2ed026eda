"""Which parameters train: all of the transformer, or a LoRA adapter on it (a ControlNet copy: ``.controlnet``).

A trained-parameters part has one job: name the module the optimizer trains, how it enters the model's forward, and
what the run saves as its result. Its fields and methods, as the engine (:func:`~.engine.train`) uses them:

- ``module``: the module whose trainable parameters (``requires_grad``) the optimizer, the gradient clipping and the
  EMA see, and that checkpoints hold; ``prepare()`` marks them trainable (the module is in train mode already);
- ``frozen_components``: the pipeline components kept frozen (no gradients, eval mode) on the training device;
- ``checkpointed(state)``: the part of the module's state dict that checkpoints hold, and ``strict_checkpoints``
  whether that is all of it;
- ``forward(model, noisy, timesteps, condition)``: the model output (B, C_out, h, w); ``model`` is ``module`` as
  accelerate prepared it (a DDP wrapper across processes);
- ``result_name``, ``save(folder)`` and ``push(repo_id, samples, card_info)``: the result, saved with the EMA
  weights to ``<output_dir>/<result_name>`` and uploaded by ``--push_to_hub``.

A part checks its pipeline when it is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch


class TrainedParameters(Protocol):
    """Which parameters train and what the run saves (see the module docstring)."""

    module: torch.nn.Module
    frozen_components: tuple[str, ...]
    strict_checkpoints: bool
    result_name: str

    def prepare(self) -> None: ...

    def checkpointed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def forward(
        self, model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]
    ) -> torch.Tensor: ...

    def save(self, folder: Path) -> None: ...

    def push(self, repo_id: str, samples: Sequence[tuple[str, Any]], card_info: dict[str, Any]) -> None: ...


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``module`` that require gradients, in ``module.parameters()`` order."""
    return [param for param in module.parameters() if param.requires_grad]


def trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``state`` (``module``'s state dict) that are trainable parameters of ``module``."""
    trainable = {name for name, param in module.named_parameters() if param.requires_grad}
    return {key: value for key, value in state.items() if key in trainable}


def transformer_forward(
    model: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, Any]
) -> torch.Tensor:
    """The transformer's output (B, C_out, h, w) for the noisy latents (B, C, h, w) at ``timesteps`` (B,)."""
    return model(noisy, timestep=timesteps, **condition).sample


def has_adapter(module: torch.nn.Module) -> bool:
    """Whether ``module`` carries a PEFT adapter."""
    return bool(getattr(module, "_hf_peft_config_loaded", False))


class AllParameters:
    """Every weight of the pipeline's transformer trains; the result is the whole pipeline (``pipeline``).

    Args:
        pipeline: the pipeline whose ``transformer`` trains (a ``PixArtAlphaPipeline``, or stage 1's ``DiTPipeline``).

    Raises:
        ValueError: the transformer carries a PEFT adapter (train it with :class:`LoraAdapter`).
    """

    frozen_components = ("vae", "text_encoder")
    strict_checkpoints = True
    result_name = "pipeline"

    def __init__(self, pipeline: Any):
        if has_adapter(pipeline.transformer):
            raise ValueError("The transformer carries a PEFT adapter: train the adapter with LoraAdapter.")
        self.pipeline = pipeline
        self.module = pipeline.transformer

    def prepare(self) -> None:
        self.module.requires_grad_(True)

    def checkpointed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state

    forward = staticmethod(transformer_forward)

    def save(self, folder: Path) -> None:
        self.pipeline.save_pretrained(folder)

    def push(self, repo_id: str, samples: Sequence[tuple[str, Any]], card_info: dict[str, Any]) -> None:
        from ..hub import push_to_hub

        push_to_hub(self.pipeline, repo_id, samples=samples, card_info=card_info)


class LoraAdapter:
    """Only the transformer's active PEFT adapter trains (``transformer.add_adapter(LoraConfig(...))`` before): the
    optimizer, the EMA and the gradient clipping see only its parameters, the base weights stay bit-identical, and
    checkpoints hold the adapter alone (the base is the pretrained model the run starts from). The result (``lora``)
    is the LoRA weights file ``hub.LORA_WEIGHT_NAME``, which ``PixArtAlphaPipeline.load_lora_weights(folder)`` loads.

    Args:
        pipeline: the ``PixArtAlphaPipeline`` whose transformer carries the adapter.
        save_text_encoder: also save the tokenizer and text encoder next to the weights (``tokenizer/``,
            ``text_encoder/``), for a run that grew them (DreamBooth's ``--add_tokens``).
        card: fields added to every push's model card (``train_lora``: the trigger words and the pipeline's family).

    Raises:
        ValueError: the transformer has no active adapter, or several.
    """

    frozen_components = ("vae", "text_encoder")
    strict_checkpoints = False
    result_name = "lora"

    def __init__(self, pipeline: Any, save_text_encoder: bool = False, card: Mapping[str, Any] | None = None):
        module = pipeline.transformer
        active = module.active_adapters() if has_adapter(module) else []
        if len(active) != 1:
            raise ValueError(f"The transformer has the active adapters {active}: activate exactly one to train it.")
        self.pipeline = pipeline
        self.module = module
        self.adapter_name: str = active[0]
        self.save_text_encoder = save_text_encoder
        self.card = dict(card or {})

    def prepare(self) -> None:
        """Nothing: peft marked the adapter's parameters, and only them, trainable."""

    def checkpointed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The adapter's (trainable) weights of ``state``."""
        return trainable_state(self.module, state)

    forward = staticmethod(transformer_forward)

    def save(self, folder: Path) -> None:
        from ..hub import save_lora_weights

        save_lora_weights(self.module, folder, self.adapter_name)
        if self.save_text_encoder:
            self.pipeline.tokenizer.save_pretrained(folder / "tokenizer")
            self.pipeline.text_encoder.save_pretrained(folder / "text_encoder")

    def push(
        self,
        repo_id: str,
        samples: Sequence[tuple[str, Any]],
        card_info: dict[str, Any],
        extra_files: Mapping[str, Path] | None = None,
    ) -> None:
        """Upload the adapter file with a LoRA card (and ``extra_files``: name in the repo -> local file)."""
        from ..hub import push_to_hub

        push_to_hub(
            self.pipeline,
            repo_id,
            lora_adapter=self.adapter_name,
            samples=samples,
            card_info={**card_info, **self.card},
            extra_files=extra_files,
        )
