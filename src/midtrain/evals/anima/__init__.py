"""ANIMA through inspect_evals, loadable from a local directory or a pinned hub revision."""
