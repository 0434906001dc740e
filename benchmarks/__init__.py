"""Side-by-side speed measurements (not tests). Run each as `python -m benchmarks.<name>`."""
