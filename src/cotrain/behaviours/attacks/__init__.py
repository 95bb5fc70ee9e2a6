"""Built-in attacks, one module each; every module here is imported on first use."""
