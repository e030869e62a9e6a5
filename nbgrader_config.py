"""nbgrader settings shared by the instructor's command line and `ftcourse`.

The exercises' instructor sources (with solutions and hidden tests) live in
solutions/; the released student versions are generated into course/.
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "llm-finetuning-course"
c.CourseDirectory.root = "."
c.CourseDirectory.source_directory = "solutions"

# Every kernel is the current environment's Python.
c.Execute.kernel_name = "python3"
# Bound an infinite loop in a submission: each cell gets at most this many seconds.
c.Execute.timeout = 120
# Encrypt kernel channels (silences ipykernel's warning on every start).
c.KernelManager.transport_encryption = "auto"
