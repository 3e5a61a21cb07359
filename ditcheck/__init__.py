"""ditcheck: verified numerics and property testing for latent Diffusion Transformers."""

__version__ = "0.1.0"
