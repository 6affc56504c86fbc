"""alignment-midtraining: instil values in language models by midtraining on synthetic documents."""

__version__ = "0.1.0"
