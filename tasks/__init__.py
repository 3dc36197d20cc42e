"""Tasks: data + prompt template + weighted verifiers, registered by name (`get_task("gsm8k")`).

Importing this package is cheap: tasks are built (and data read) only when asked for.
"""
from tasks.base import Example, PromptTemplate, Score, Task, WeightedVerifier
from tasks.registry import get_task, list_tasks, register_task

__all__ = ["Example", "PromptTemplate", "Task", "Score", "WeightedVerifier", "register_task", "get_task",
           "list_tasks"]
