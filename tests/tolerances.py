"""The suite's numeric tolerances, each derived from float32 arithmetic.

Bit-exact comparisons (``torch.equal``, ``atol=0``) are used only where both sides run the same code on the same shapes:
a saved and reloaded model, the same pipeline called twice, a hook or residual that adds exact zeros. Everywhere else
the two sides compute the same math in another order or with other kernels: diffusers' modules against ours, fused
against separate projections, a caption padded to 120 tokens against the same caption padded to its own length, or the
same code on another CPU, whose kernels (AVX-512, AVX2 or the portable ``default`` ones, chosen at run time and forced
with ``ATEN_CPU_CAPABILITY``) block their sums differently. Two float32 sums of K products that differ only in order
differ by about ``sqrt(K) * u * |sum|`` (u = 2**-24 ≈ 6e-8, the unit roundoff; ``K * u * |sum|`` at worst).
"""

#: One forward of a tiny test model (width ≤ 32, so K ≤ 128 products per sum in the feed-forward layers, two to six
#: blocks, outputs of size ≤ ~5): per layer sqrt(128) * 6e-8 * 5 ≈ 3e-6 at worst-case alignment of a few layers' errors,
#: so 1e-5 separates reordered float32 sums from a real difference (a wrong weight or mask moves outputs by > 1e-2).
FORWARD = 1e-5

#: Images (0..1) after a few denoising steps and a VAE decode: each step feeds the model's output back in, scaled by the
#: sampler's coefficients (up to ~10 at the last DPM-Solver steps), and the decoder adds its own reordered sums, so a
#: FORWARD-sized difference grows about tenfold.
IMAGES = 1e-4

#: Caption embeddings of the tiny T5 (width 32, two layers, RMS-normalised outputs of size ≤ ~3) computed at two padded
#: lengths: the attention sums run over 120 or 8 positions in other blocks. Measured: 1.55e-6 on an AMX Xeon, 0 on an
#: EPYC; 1e-5 is the same sqrt(K) * u bound as FORWARD.
TEXT = 1e-5
