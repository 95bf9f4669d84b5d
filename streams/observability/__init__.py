"""What operators see.

Prometheus metrics, logging set-up, the worker's status page and the report's plots.
"""
