"""Pipelines: compositions of I/O, preprocessing, the tiled engine and models (classify, train, preprocess)."""
