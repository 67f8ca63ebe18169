"""``python -m cache_pipeline.devstack`` (what ``make run`` runs)."""

from cache_pipeline.devstack.main import main

main()
