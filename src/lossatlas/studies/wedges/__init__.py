"""The wedge study: Fort & Jastrzebski (2019), PAPERS.md part A (see ``README.md`` here).

One module per experiment: :mod:`~.toy` (A1), :mod:`~.cuts` (A2), :mod:`~.tunnel` (A3/A4),
:mod:`~.connectors` (A5), :mod:`~.sweep` (A6) and :mod:`~.ensemble` (A7); their options are in
:mod:`~.config` and the order they run in is :mod:`~.study`. This ``__init__`` imports nothing,
so the options can be read without loading the experiments.
"""
