"""Analysis: statistics on arrays (weights, predictions, losses) produced by earlier stages.

Nothing here imports ``torch.nn``: inputs are numpy arrays or tensors, outputs are numbers and
numpy arrays, so analyses run on anything read back from the store.
"""

from lossatlas.analysis.embedding import (
    Gram,
    OutOfCorePCA,
    PHATEEmbedding,
    demap_score,
    embed_all,
    score_embeddings,
    streamed_gram,
    trajectory_preservation,
    trustworthiness_score,
)
from lossatlas.analysis.ensembles import (
    accuracy_difference_se,
    angle_matrix,
    disagreement,
    disagreement_matrix,
    ensemble_accuracy,
    ensemble_probs,
    mean_offdiagonal,
    predictions,
    running_ensemble_accuracy,
    softmax,
    successive_angles,
    successive_disagreement,
    swa_average,
    vector_angle,
)
from lossatlas.analysis.topology import (
    LossTopology,
    compare_networks,
    diagram_distance,
    knn_graph,
    persistence_diagrams,
    persistence_summary,
    sublevel_filtration,
)

__all__ = [
    # Ensembles (PAPERS A7)
    "accuracy_difference_se",
    "angle_matrix",
    "disagreement",
    "disagreement_matrix",
    "ensemble_accuracy",
    "ensemble_probs",
    "mean_offdiagonal",
    "predictions",
    "running_ensemble_accuracy",
    "softmax",
    "successive_angles",
    "successive_disagreement",
    "swa_average",
    "vector_angle",
]

# Topology (PAPERS B3, B4): a separate sorted block, so that each group stays sorted for ruff.
__all__ += [
    "LossTopology",
    "compare_networks",
    "diagram_distance",
    "knn_graph",
    "persistence_diagrams",
    "persistence_summary",
    "sublevel_filtration",
]

# Embeddings (PAPERS B2): a separate sorted block, like topology's.
__all__ += [
    "Gram",
    "OutOfCorePCA",
    "PHATEEmbedding",
    "demap_score",
    "embed_all",
    "score_embeddings",
    "streamed_gram",
    "trajectory_preservation",
    "trustworthiness_score",
]
