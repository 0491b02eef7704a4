"""Embeddings of jump-and-retrain samples and scores that compare them (PAPERS B2).

Modules: :mod:`~.pca` (:class:`OutOfCorePCA`), :mod:`~.phate` (:class:`PHATEEmbedding`),
:mod:`~.methods` (:func:`embed_all`) and :mod:`~.scores`; the streamed Gram pass is
:mod:`lossatlas.analysis._outofcore`.

The samples are ``S`` flat parameter vectors, ``X`` of shape ``(S, D)``: in the paper 640
vectors of 1.47M floats, 3.8 GB as float32, so ``X`` may be a ``zarr.Array`` read from the atlas
store and is never loaded whole. Everything below needs only pairwise quantities between the
``S`` samples, and those follow *exactly* from the ``S × S`` Gram matrix, which one streamed,
memory-bounded pass computes (:func:`streamed_gram`, see :mod:`lossatlas.analysis._outofcore`):

* PCA scores are the eigenvectors of the centred Gram matrix scaled by the square roots of its
  eigenvalues (:class:`OutOfCorePCA`), so no ``D × k`` factor is ever needed for them;
* Euclidean and cosine distances, which the quality scores use, are exact (no PCA in
  between);
* projections onto the two directions of the Li et al. plane come from the same pass.

Methods compared by :func:`embed_all` (all return ``(S, 2)`` float64 arrays):

* ``"phate"``: :class:`PHATEEmbedding`, with the paper's settings (cosine kNN graph and cosine
  MDS, knn=5, decay=40, t="auto", gamma=1, n_pca=100) and a seed, which the released code
  lacked.
* ``"pca"``: the first two PCA scores of the same samples (centred).
* ``"tsne"``, ``"umap"``: scikit-learn's t-SNE and umap-learn's UMAP (optional extra
  ``lossatlas[umap]``) on the PCA scores, with the same metric as PHATE's graph, so the
  comparison varies the method and not the metric.
* ``"random_plane"``: coordinates of ``x - θ*`` in the plane of two directions given by the
  caller (filter-normalised ones, built where ``torch.nn`` is allowed) or Gaussian ones.

Scores (:func:`score_embeddings`), each a float, higher is better, every method scored the
same way:

* ``trustworthiness`` / ``continuity``: scikit-learn's trustworthiness with ``k`` neighbours
  on exact high-dimensional distances (Venna & Kaski 2001), and the same with the two spaces'
  roles swapped: 1 when no embedding neighbour is a false one / no true neighbour is torn away.
* ``demap``: Spearman correlation of the embedding distances with geodesic distances on the
  smallest *connected* kNN graph of the samples with at least ``k`` neighbours (DEMaP, Moon et
  al. 2019, with the samples' own graph standing in for the noiseless ground truth).
* ``purity_<label>``: kNN label purity by trajectory, jump size or direction (:func:`knn_purity`).

:func:`trajectory_preservation` (order along each trajectory only) is kept but not scored: any
view that keeps each trajectory's order, a random linear one included, scores near 1.

Nothing here imports torch; inputs are numpy arrays (or array-likes, zarr arrays, torch tensors
converted on the way in), outputs are numpy arrays and floats.
"""

from lossatlas.analysis._outofcore import Gram, streamed_gram
from lossatlas.analysis.embedding.methods import ALL_METHODS, available_methods, embed_all
from lossatlas.analysis.embedding.pca import OutOfCorePCA
from lossatlas.analysis.embedding.phate import PHATEEmbedding
from lossatlas.analysis.embedding.scores import (
    connecting_knn,
    continuity_score,
    demap_score,
    knn_purity,
    score_embeddings,
    trajectory_preservation,
    trustworthiness_score,
)

__all__ = [
    "ALL_METHODS",
    "Gram",
    "OutOfCorePCA",
    "PHATEEmbedding",
    "available_methods",
    "connecting_knn",
    "continuity_score",
    "demap_score",
    "embed_all",
    "knn_purity",
    "score_embeddings",
    "streamed_gram",
    "trajectory_preservation",
    "trustworthiness_score",
]
