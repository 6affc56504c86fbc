"""Synthetic document generation: universes, prompts, resumable LLM stages, filters, templates."""
