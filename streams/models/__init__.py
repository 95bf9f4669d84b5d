"""Models: learning, serving and keeping them.

River estimators and prequential metrics, drift detection, the signed registry, champion
and shadow lifecycle, delayed labels, and the predict stage (:mod:`~streams.models.stage`).
"""
