"""File and directory names the public layouts fix, shared by their readers
(:mod:`semiseg.data.layouts`) and the synthetic generators that write them
(:mod:`semiseg.data.synthetic`). A module of its own so that the fetch stage, which runs the
generators, does not depend on the readers' code."""

__all__ = ["LA_FILE_NAME", "LA_IMAGE_DIR"]

#: The LA layout's image directory and per-case file name (as in the public 2018 LA release).
LA_IMAGE_DIR = "2018LA_Seg_Training Set"
LA_FILE_NAME = "mri_norm2.h5"
