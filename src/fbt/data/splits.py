"""The split names every loader accepts."""

SPLITS = ("train", "valid", "test")
