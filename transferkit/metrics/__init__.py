"""Streaming metrics: accumulate per batch, compute once per epoch; never keep all predictions."""
