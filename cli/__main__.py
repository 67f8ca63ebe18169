"""``python -m cli``: the same as the ``cache-pipeline`` console script."""

from cli.main import main

main()
