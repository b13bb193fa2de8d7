"""Fused Triton kernels for SGA/SGA+ soft rounding (installed as sgafast.kernels)."""
