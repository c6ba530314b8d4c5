"""Offline training, evaluation and export of the four served Keras models."""
