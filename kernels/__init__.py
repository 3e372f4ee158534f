"""Triton kernels of spice, each beside its plain-torch reference; importable as `spice.kernels`."""
