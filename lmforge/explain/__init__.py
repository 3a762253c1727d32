"""Seeing inside a model: a forward pass walked through with its numbers, the attention explorer."""
