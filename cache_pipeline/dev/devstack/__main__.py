"""``python -m cache_pipeline.dev.devstack`` (what ``make run`` runs)."""

from cache_pipeline.dev.devstack.main import main

main()
