"""The training engine: knows nothing about images or text, only models, tasks and batches."""
