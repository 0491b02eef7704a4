"""Curvature of the training loss: Hessian-vector products, top eigenpairs, trace, density, counts.

Modules: :mod:`~.operator` (:class:`HessianOperator`), :mod:`~.dense`, :mod:`~.eigen`,
:mod:`~.trace` and :mod:`~.density` (density and counts).

Everything here works on any ``nn.Module`` plus data, and treats the Hessian as a linear
operator that is never formed (except by :func:`dense_hessian`, the exact reference for small
models):

* :class:`HessianOperator` - ``H v`` by forward-over-reverse differentiation, with a SciPy view.
* :func:`hessian_eigenvalues` / :func:`hessian_eigenpairs` - top of the spectrum by Lanczos
  (ARPACK's ``eigsh``).
* :func:`hessian_trace` - Hutch++ (Meyer et al. 2021).
* :func:`spectral_density` - stochastic Lanczos quadrature (Ghorbani et al. 2019), returning a
  :class:`SpectralDensity`.
* :func:`count_above` - the number of eigenvalues above curvature thresholds: Fort &
  Jastrzebski's "short directions" (paper A, Fig. 4).

Conventions shared by all of them:

* ``data`` is an ``(X, y)`` pair of tensors (moved to the device once), a ``DataLoader`` or
  other re-iterable of batches (streamed: read batch by batch at every product, one batch on
  the device at a time) or a lossatlas ``Dataset`` (its train split). Batches are read by a
  :class:`~lossatlas.BatchAdapter` (``adapter=``; ``(x, y)`` pairs and HuggingFace-style dicts
  with ``labels`` need none), and ``wrt=`` chooses which parameters the Hessian is taken with
  respect to (default the trainable ones: a frozen backbone is left out; a name or module
  gives a per-layer Hessian).
* The loss is the mean of ``loss_fn`` (cross-entropy by default) over the *whole* data set. It
  is evaluated in sample chunks of ``batch_size`` to bound memory; each chunk's contribution is
  weighted by its number of samples, so the result equals the full-batch loss (for a
  mean-reduced ``loss_fn``) and is independent of ``batch_size`` and of the batching.
* :func:`hessian_eigenvalues` takes ``which="LA"`` (largest), ``"SA"`` (most negative),
  ``"LM"`` (largest magnitude) or ``"BE"`` (both ends).
* The model is evaluated in **eval mode**: dropout is off and BatchNorm uses its running
  statistics (passed as ``buffers``, default the module's own), so the loss is a deterministic
  function of the parameters alone. The module's own train/eval flag is restored afterwards.
* ``params`` is a flat ``(D,)`` point (see :class:`lossatlas.ParamSpace`), default the module's
  current parameters. Its device and dtype decide where and in what precision everything runs:
  float32 by default, float64 when the parameters are float64. When ``params`` is not given and
  ``X`` lives on an accelerator, the computation follows ``X`` there.
* Random draws come from an explicit ``torch.Generator``; none touches global RNG state.
"""

from lossatlas.probes.curvature.dense import dense_hessian, hessian_spectrum
from lossatlas.probes.curvature.density import SpectralDensity, count_above, spectral_density
from lossatlas.probes.curvature.eigen import hessian_eigenpairs, hessian_eigenvalues
from lossatlas.probes.curvature.operator import DENSE_MAX_DIM, EXACT_MAX_DIM, HessianOperator
from lossatlas.probes.curvature.trace import hessian_trace

__all__ = [
    "DENSE_MAX_DIM",
    "EXACT_MAX_DIM",
    "HessianOperator",
    "SpectralDensity",
    "count_above",
    "dense_hessian",
    "hessian_eigenpairs",
    "hessian_eigenvalues",
    "hessian_spectrum",
    "hessian_trace",
    "spectral_density",
]
