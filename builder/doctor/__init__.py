"""Diagnosis: matching logs against known failures, checking a host and a model folder; imports profile, engine, errors and safety only."""
