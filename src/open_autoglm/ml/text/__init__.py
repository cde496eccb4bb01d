"""ml/text."""
