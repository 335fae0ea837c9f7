"""Attention kernels for HSTU and their PyTorch references."""

from __future__ import annotations

from kernels.hstu_attention import hstu_attention

__all__ = ["hstu_attention"]
