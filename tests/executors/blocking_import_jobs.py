"""A target module whose import-time code blocks until the test sets ``executor_jobs.release``."""

import executor_jobs

executor_jobs.calls.append("importing")
executor_jobs.release.wait(60)


def job():
    executor_jobs.calls.append("ran")
