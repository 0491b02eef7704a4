"""The geometry and topology study: Horoi et al. (2022), PAPERS.md part B (``README.md`` here).

One module per part: :mod:`~.networks` (B4's two networks), :mod:`~.jumps` (B1), :mod:`~.embed`
(B2), :mod:`~.topology` (B3) and :mod:`~.compare` (B3/B4); options in :mod:`~.config`, the order
the steps run in :mod:`~.study`. This ``__init__`` imports nothing, so the options can be read
without loading the study.
"""
