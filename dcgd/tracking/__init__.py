"""Experiment tracking: MLflow logger defaults, config saving, image grids."""
