"""Data: TFDS splits read without TensorFlow and held in memory, and their batches."""
