"""Training PixArt-alpha: one loop (``engine.train``) that every trainer of ``examples/`` shares, and its parts.

``engine``: the loop; ``conditioning``, ``parameters``, ``diffusion``: the parts (what a batch is conditioned on,
which parameters train, the objective); ``checkpoints``: saving and resuming; ``logs``: what a run logged, read back;
``stages``, ``dreambooth``, ``controlnet``: the trainers, each a composition of parts, with their options (``config``)
and entry points.
"""

from .diffusion import IDDPMDiffusion

__all__ = ["IDDPMDiffusion"]
