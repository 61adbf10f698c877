"""The steps of grading, one module each, in the order a submission meets them (the lists
``SUBMISSION_STEPS`` and ``RECORD_STEPS`` of :mod:`autograder.grading` run them):

* :mod:`~autograder.steps.validate` reads and checks the submission;
* :mod:`~autograder.steps.stage` makes its private course root;
* :mod:`~autograder.steps.run` runs ``nbgrader autograde`` and ``generate_feedback`` on the
  executor's slot (the out-of-kernel checks run inside autograde: :mod:`autograder.checks`);
* :mod:`~autograder.steps.check` reads what those checks recorded and the cells that timed out;
* :mod:`~autograder.steps.record` puts the grades into the course gradebook and the files into
  ``--out`` (the main thread only: the gradebook's single writer);
* :mod:`~autograder.steps.export` writes ``grades.csv`` once per batch, before
  :mod:`autograder.report` writes ``report.html``.

Each step is ``step(task, opts)`` (:mod:`autograder.task`) and ends a submission early by
raising :class:`~autograder.task.Verdict`.
"""
