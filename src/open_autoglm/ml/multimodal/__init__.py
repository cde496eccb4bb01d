"""Multimodal models: text and tabular encoders, alignment, fusion strategies, training."""
