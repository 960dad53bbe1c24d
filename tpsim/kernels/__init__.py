"""Measured kernel tables: per-GPU latencies of GEMMs, attention, collectives and fused MoE.

The tables are converted from public measurements (``tpsim import aic``) and shipped under
``configs/kernels/<GPU>/``; this package reads them with the standard library only and
answers queries by the rules in :mod:`tpsim.kernels.grid`.  Nothing here is imported by
``tpsim run`` unless a latency model asks for tables.
"""

from tpsim.kernels.tables import KernelEstimate, KernelTables, MissingTableError, load_kernel_tables

__all__ = ["KernelEstimate", "KernelTables", "MissingTableError", "load_kernel_tables"]
