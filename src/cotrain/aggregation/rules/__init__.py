"""Built-in aggregation rules, one module each; every module here is imported on first use."""
