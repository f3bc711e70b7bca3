"""Inference protocols (2D slice-wise, 3D sliding window) and the `infer` stage."""
