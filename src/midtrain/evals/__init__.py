"""Evaluation suites: ANIMA and human compassion through inspect_evals, capability and
safety task lists, and the project's judge-free compassion probe.

Inspect tasks are registered through the `inspect_ai` entry point (`midtrain._registry`),
so `inspect eval midtrain/anima` works; `midtrain.eval.evaluate` runs suites on a run dir.
"""
