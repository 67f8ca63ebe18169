"""End-to-end benchmarks of the worker against a real SQS endpoint and a real Redis.

``python -m bench --help`` (or ``make bench``) runs them; docs/benchmarks.md has
the figures and the commands.
"""
