"""Diagnosis: matching logs against known failures, checking a host (its engine through a probe the caller passes) and a model folder; imports profile, errors and safety only, never an engine."""
