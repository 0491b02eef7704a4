"""Low-loss connections between optima: tunnels between two (A3) and m-connectors among many (A5).

Modules: :mod:`~.tunnel`, :mod:`~.connector`, their :mod:`~.options`, the
:mod:`~.projection` and the shared optimisation (``_fit``).

Both are constrained optimisation of points of weight space, run as *one* population through
:func:`lossatlas.populations.train.fit_members` (the library's one training loop) with the gradient
projected onto the orthogonal complement of the optima's affine span:
``g <- g - Q (Q^T g)`` (:func:`projection_onto_complement`). Every point therefore keeps its
coordinates inside the span and only moves away from it; for two optima the span is the line
through them (``Q = u = (theta_b - theta_a) / |theta_b - theta_a|``).

:func:`tunnel` (paper A3)
    The segment ``theta_a -> theta_b`` is split at ``k = options.points`` positions
    ``t_i = i / (k + 1)``, ``i = 1..k`` (the endpoints are optima already). Each split point is
    trained with the projected gradient; the tunnel is the polyline
    ``theta_a, p_1*, ..., p_k*, theta_b``. Because deviations are orthogonal to ``u``, the tunnel
    point at position ``t`` projects onto the line point at ``t``: both paths share ``path_t``.
    Deviation cosines are split into two blocks: the first ``ceil(k / 2)`` split points
    (nearer ``theta_a``) and the rest (the paper saw steps 0-4 vs 5-9 for ``k = 10``).

:func:`m_connector` (paper A5)
    ``m + 1`` optima. The optimised points are barycentres of faces of the optima simplex,
    started there; ``options.shape`` says which, and which simplices over the vertex table
    ``[optima, points]`` make up the connector (see :mod:`lossatlas.probes._simplex`):

    * ``"cone"``: the centroid only; the connector is ``union_i conv(c*, facet_i)``,
      facet ``i`` being all optima but ``i``. It contains every optimum as a vertex. For
      ``m >= 2`` it also contains the optima simplex's own (straight, unoptimised) facets, e.g.
      the straight edges between optima, so its samples include high-loss points near them
      (the weight on ``c*`` is Beta(1, m)): on MNIST-1D MLPs its mean sample loss at m = 3 is
      ~2x that of the star or the subdivision: it mixes the unoptimised hull into the connector.
    * ``"star"`` (default): the centroid only; the connector is the union of the segments
      ``[c*, theta_i]`` (the paper's "union of straight segments"). Any ``m``, cheapest. It is
      the default because every point of it is reached through the optimised centre, which is
      what the paper's construction optimises; the cone stays available for comparison.
    * ``"subdivision"``: every face barycentre (``2^(m+1) - m - 2`` points, so ``m <= 7``; all
      are projected off the span of *all* optima, so each keeps its barycentric coordinates); the
      connector is the barycentric subdivision ``union_pi conv(c*, ..., b*{pi0,pi1},
      theta_pi0)`` over the ``(m + 1)!`` orderings ``pi``. Each simplex holds one optimum, so
      no straight segment between optima remains.

    Dirichlet sampling on the connector: a simplex uniformly at random (a facet, an optimum or
    an ordering), then Dirichlet(1) weights over its vertices. For the cone and the subdivision
    every simplex has the same volume before optimisation, so this is the uniform distribution
    on the optima's convex hull; the same weights applied to the unoptimised vertices give the
    ``hull`` baseline reported beside the connector.

    ``method="benton"`` (Benton et al. 2021, loss-surface simplexes) trains the same points
    *without* projection by minimising the expected training loss over Dirichlet samples of the
    connector's simplices (``benton_samples`` fresh, seeded samples per step, all on the step's
    batch) minus ``benton_volume`` times the mean log-volume of the sampled simplices. The
    optima stay fixed. It uses a plain loop with the library's functional optimisers (the
    trained parameters are simplex vertices, not the points whose loss is taken, so
    ``fit_members`` does not fit).

Conventions, shared with the other probes:

* ``data`` is an ``(X, y)`` pair, a ``DataLoader`` or a lossatlas ``Dataset``. Training uses
  the train split; loss and accuracy are reported on ``train`` and, when the data has one, on
  ``test``. Label disagreement uses ``test`` (``train`` when there is none).
* The optima's dtype and device decide where and in what precision everything runs.
* ``buffers`` (BatchNorm statistics, name -> tensor) are used unchanged at every point, for
  training and evaluation alike (default: the module's own); they are not recomputed along
  the path. Evaluation is in eval mode (:func:`lossatlas.evaluate.evaluate_points`).
* Every point draws its own data order from ``(seed, "order", point index, epoch)`` with the
  seed derived from ``(options.seed, "tunnel")`` or ``(options.seed, "connector")``, so a point
  trains identically alone or in the population. Dirichlet samples come from
  ``make_generator(options.seed, "connector", "samples")``. No global RNG state is used.
* Weight decay is always 0: ``fit_members`` adds it after the projection, which would pull the
  points out of their constraint sets. With ``optimizer="adam"``, whose per-coordinate scaling
  also rotates a projected gradient out of the hyperplane, each point is re-projected onto its
  constraint set after every step (projected Adam).

Defaults (``ConnectorOptions()``): 5 epochs of SGD, lr 0.1, momentum 0.9, cosine-decayed,
batch 128. On MNIST-1D with the default ``mlp`` (D = 15,210; endpoints trained 20 epochs) a
9-point tunnel takes ~2 s with one CPU thread (~10 s with two threads on a shared, loaded
2-core machine) and brings the middle split point's training loss from 2.35 (on the line) to
0.55; an m-connector (m <= 10, centroid only) takes ~1 s.
"""

from lossatlas.probes.paths.connector import Connector, m_connector
from lossatlas.probes.paths.options import ConnectorOptions
from lossatlas.probes.paths.projection import projection_onto_complement
from lossatlas.probes.paths.tunnel import Tunnel, tunnel

__all__ = [
    "Connector",
    "ConnectorOptions",
    "Tunnel",
    "m_connector",
    "projection_onto_complement",
    "tunnel",
]
