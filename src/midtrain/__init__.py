"""alignment-midtraining: instil values in language models by midtraining on synthetic documents."""

__version__ = "0.1.0"

# `${midtrain.hash:}` and `${midtrain.repo:...}` must exist before any config is composed.
from midtrain.tracking.identity import register_resolvers as _register_resolvers  # noqa: E402

_register_resolvers()
