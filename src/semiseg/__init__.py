"""semiseg: a reproducible benchmark pipeline for semi-supervised medical image segmentation."""

__version__ = "0.1.0"
