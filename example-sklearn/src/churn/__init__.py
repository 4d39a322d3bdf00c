"""Customer churn: the scikit-learn model project in mlgate's tests (CSV data in git, no DVC, no torch)."""
