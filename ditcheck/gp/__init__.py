"""Gaussian-process models: the unrolled gradient-descent transformer (GP2), its training (GP4) and the
random-feature attention layer (RF1)."""
