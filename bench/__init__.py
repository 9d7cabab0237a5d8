"""Benchmarks: our explainers against Captum and pytorch-grad-cam in one process, and the compute limit."""
