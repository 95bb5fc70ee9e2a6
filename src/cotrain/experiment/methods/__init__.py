"""Built-in methods, one module each (``fedavg``, ``split``, ``fada``); every module here is
imported on first use, so a new method is one new file."""
