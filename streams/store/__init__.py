"""What a pipeline leaves behind, and what is rebuilt from it.

The Parquet offline store and its sink, reading outputs back, the lineage of a prediction,
replay from the raw topic and training from the store.
"""
