"""facevae: learn and measure what variational autoencoders learn about faces."""

__version__ = "0.1.0"
