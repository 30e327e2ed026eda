"""Training PixArt-alpha: the IDDPM objective and the engine that the stage scripts in ``examples/`` share."""

from .diffusion import IDDPMDiffusion

__all__ = ["IDDPMDiffusion"]
