"""Sweep specs, planning, the Optuna-backed run ledger, launching and W&B tracking."""
