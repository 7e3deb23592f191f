"""Rendering a plan into a build context (Dockerfile plus files), guarding it, and hashing it into the image's identity; imports plan, profile, lock's file format, errors and safety only."""
