"""Example tasks for the scheduler: task files in ``tasks.d`` and the Python jobs they call."""
