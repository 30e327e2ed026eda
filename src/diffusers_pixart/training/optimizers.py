"""The optimizer of a run (``--optimizer``): AdamW, 8-bit AdamW, or CAME.

- ``adamw``: ``torch.optim.AdamW``, two float32 moments per trained weight (8 bytes each);
- ``adamw8bit``: AdamW with both moments stored in 8 bits, block-wise quantised (2 bytes per weight):
  ``bitsandbytes.optim.AdamW8bit`` when bitsandbytes is installed (``pip install "diffusers_pixart[optim]"``; it has
  CPU and CUDA backends; tensors under 4,096 elements keep 32-bit moments), else torchao's ``AdamW8bit`` (the
  ``lowmem`` extra; it compiles its update with ``torch.compile``, so its first steps are slow);
- ``came``: CAME (Luo et al. 2023, "Confidence-guided Adaptive Memory Efficient Optimization"), the optimizer
  PixArt-Σ and Sana train with: a factored second moment (a row and a column vector per matrix, as Adafactor) and a
  factored confidence term, so about 4 bytes per weight for the first moment (``came-pytorch``, in the ``train``
  extra). Its betas are ``(adam_beta1, adam_beta2, 0.9999)`` and its epsilons CAME's own ``(1e-30, 1e-16)``.

Every optimizer takes ``--learning_rate``, ``--adam_weight_decay`` and (AdamW's) ``--adam_beta1/2``/``--adam_epsilon``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: The ``--optimizer`` choices.
OPTIMIZERS = ("adamw", "adamw8bit", "came")
#: CAME's third beta (of its confidence term) and its two epsilons (the paper's and PixArt-Σ's values).
CAME_BETA3 = 0.9999
CAME_EPS = (1e-30, 1e-16)


def check_optimizer(name: str) -> None:
    """Raise a ``ValueError`` (or ``ImportError`` naming the package to install) before anything trains."""
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}.")
    if name == "came":
        try:
            import came_pytorch  # noqa: F401
        except ImportError as error:
            raise ValueError('--optimizer came needs came-pytorch: pip install "came-pytorch>=0.1.3".') from error
    if name == "adamw8bit" and _eight_bit_adamw() is None:
        raise ValueError(
            '--optimizer adamw8bit needs bitsandbytes (pip install "diffusers_pixart[optim]") or torchao '
            '(pip install "diffusers_pixart[lowmem]").'
        )


def _eight_bit_adamw() -> type | None:
    """bitsandbytes' ``AdamW8bit`` if installed, else torchao's, else None."""
    try:
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit
    except ImportError:
        pass
    try:
        from torchao.optim import AdamW8bit

        return AdamW8bit
    except ImportError:
        return None


def make_optimizer(config: Any, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``params``, with the config's learning rate, weight decay, betas and
    epsilon (see the module docstring)."""
    name = config.optimizer
    check_optimizer(name)
    params = list(params)
    if name == "came":
        from came_pytorch import CAME

        return CAME(
            params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2, CAME_BETA3),
            eps=CAME_EPS,
            weight_decay=config.adam_weight_decay,
        )
    cls = torch.optim.AdamW if name == "adamw" else _eight_bit_adamw()
    return cls(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )
