"""The Celery app, the raw-queue consumer and the per-type tasks."""
