"""File-format readers; importing this package registers every built-in data set."""

from cotrain.data.readers import cifar10, dsprites, mnist, mnist_m, npz, olivetti, usps, utkface

__all__ = ["cifar10", "dsprites", "mnist", "mnist_m", "npz", "olivetti", "usps", "utkface"]
