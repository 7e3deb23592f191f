"""Lock files: their format and seal (below the plan, which reads them) and their resolution with uv (above it); the format imports errors and safety only."""
