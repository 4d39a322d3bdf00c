"""The model-test gate: behavioral, performance and baseline checks of a candidate model (issue 4, in progress)."""
