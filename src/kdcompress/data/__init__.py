"""Tasks (labelled, per language) and unlabeled corpora."""

from kdcompress.data.tasks import Example, Task, data_dir_from_env, get_task, TASKS

__all__ = ["Example", "Task", "TASKS", "get_task", "data_dir_from_env"]
