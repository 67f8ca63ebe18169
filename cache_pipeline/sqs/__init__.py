"""The SQS client: signed calls, the queue the worker consumes, the dead-letter queue."""
