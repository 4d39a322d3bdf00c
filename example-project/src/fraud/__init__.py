"""Fraud detection: the running example model project of mlgate."""

__version__ = "0.1.0"
