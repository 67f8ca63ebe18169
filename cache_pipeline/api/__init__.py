"""The HTTP surface: /livez, /readyz, /metrics."""
