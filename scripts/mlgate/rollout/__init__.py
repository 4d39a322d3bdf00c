"""Staged canary rollouts."""
