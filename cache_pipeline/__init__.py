"""Persistent cache pipeline: SQS state changes applied to Redis, read by a fast SDK."""

__version__ = "0.1.0"
