"""cce_core: the Cascade Context Encoder and NSD (arXiv:1803.04033) as a small library."""
