"""Celery app and tasks: distributed embedding and indexing."""
