"""Built-in defences, one module each; every module here is imported on first use."""
