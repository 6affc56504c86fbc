"""Hugging Face model building and attention-backend choice (no Lightning, no Hydra)."""
