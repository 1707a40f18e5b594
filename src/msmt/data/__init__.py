"""Reading, validation, encoding, batching and synthetic data."""
