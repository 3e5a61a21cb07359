"""Diffusion: samplers on one signature, exact-score oracles, and the distances between sample sets."""
