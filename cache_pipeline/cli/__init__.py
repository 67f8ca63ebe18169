"""The ``cache-pipeline`` command line: the top layer, over ``api``, ``tasks`` and the core."""
