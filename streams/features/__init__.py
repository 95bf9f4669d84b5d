"""Online features.

Numba kernels beside their plain-Python twins (:mod:`~streams.features.kernels`), the
``[features]`` table (:mod:`~streams.features.spec`), a batch's input columns
(:mod:`~streams.features.columns`), per-key bounded state (:mod:`~streams.features.state`),
feature sets (:mod:`~streams.features.engine`) and the features stage
(:mod:`~streams.features.stage`).
"""
