"""Durable index jobs: a queue in the catalog database and the workers that run it."""

from lookalike.jobs.queue import Job, JobQueue, Task
from lookalike.jobs.worker import Worker

__all__ = ["Job", "JobQueue", "Task", "Worker"]
