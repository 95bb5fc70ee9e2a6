"""Sections that apply across methods (``[aggregation]``, ``[attack]``, ``[defence]``, ``[audit]``, ``[faults]``),
one module each; every module here is imported when the config is assembled."""
