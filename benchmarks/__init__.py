"""The benchmark behind ``riverline bench`` and its baselines, outside the product.

It may import :mod:`streams` and :mod:`agents`; neither imports it. It registers the
``bench`` command as a plugin of the ``riverline`` command line (see README.md here).
"""
