"""noisylabels: train classifiers when many training labels are wrong, and find the wrong labels."""

__version__ = "0.1.0"

__all__ = ["__version__"]
