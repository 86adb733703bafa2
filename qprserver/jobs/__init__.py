"""Periodic work: plain async functions with explicit inputs, claimed per period."""
