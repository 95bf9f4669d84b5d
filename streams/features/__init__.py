"""Online features.

Numba kernels beside their plain-Python twins (:mod:`~streams.features.kernels`), feature
sets and their bounded state (:mod:`~streams.features.engine`) and the features stage
(:mod:`~streams.features.stage`).
"""
