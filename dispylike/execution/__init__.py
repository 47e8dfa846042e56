"""Packaging computations, staging files and running jobs in processes."""
