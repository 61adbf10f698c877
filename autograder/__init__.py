"""The course's grading harness around nbgrader and papermill."""
