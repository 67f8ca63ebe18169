"""``python -m cache_pipeline.dev``: the development tools (``cache_pipeline.dev.cli``)."""

from cache_pipeline.dev.cli import main

main()
