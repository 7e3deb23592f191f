"""Smoke checks: the catalog of checks an image can carry (pure data, imports nothing) and the runner that runs them in a container through an engine."""
