"""The two studies: the wedge model (Fort & Jastrzebski 2019) in :mod:`~.wedges` and geometry
and topology (Horoi et al. 2022) in :mod:`~.horoi`; :mod:`~.run` runs both.

This ``__init__`` imports nothing, so that a study's options can be read without loading it.
"""
