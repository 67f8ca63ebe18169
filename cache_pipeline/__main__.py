"""``python -m cache_pipeline``: the same as the ``cache-pipeline`` console script."""

from cache_pipeline.cli.main import main

main()
