"""Benchmarks: ``python -m dcgd.benchmarks.<name>``. They measure and print; they assert nothing."""
