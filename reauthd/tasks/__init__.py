"""Reauth tasks as a service: reconcile verdicts into tasks, the API for the daemon, the web page and the CLI."""

from reauthd.tasks.service import ReconcileResult, TaskService, task_to_dict

__all__ = ["ReconcileResult", "TaskService", "task_to_dict"]
