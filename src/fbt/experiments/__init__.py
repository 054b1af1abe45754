"""Experiment grids: declarative files of training cells, run resumably, reported as one table."""
