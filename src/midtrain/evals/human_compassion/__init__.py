"""Human compassion: inspect_evals' MORU task behind the project's grader rules."""
