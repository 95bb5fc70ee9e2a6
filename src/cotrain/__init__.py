"""cotrain."""
