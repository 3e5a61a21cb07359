"""Torch models: the original-layout DiT (facebookresearch/DiT) and the LD2 latent score network, in one file (dit.py)."""
