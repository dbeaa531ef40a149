"""Data stages: convert (importers), validate, splits, and the torch Dataset used for training."""
