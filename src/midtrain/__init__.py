"""alignment-midtraining: instil values in language models by midtraining on synthetic documents."""

__version__ = "0.1.0"

# `${midtrain.hash:}`, `${midtrain.repo:...}` and the group schemas (`model/_schema`,
# `corpus/_schema`) must exist before any config is composed.
from midtrain.conf_schema import register_schemas as _register_schemas  # noqa: E402
from midtrain.tracking.identity import register_resolvers as _register_resolvers  # noqa: E402

_register_resolvers()
_register_schemas()
