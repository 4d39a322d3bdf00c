"""Setting up a model repository on GitHub through its REST API: `mlgate github setup`'s core."""
