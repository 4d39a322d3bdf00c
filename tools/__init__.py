"""Maintainer tools for mlgate's own repository (releases); not part of the mlgate package."""
