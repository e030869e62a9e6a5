"""Instructor and CI tooling of the course: the ``ftcourse`` command (:mod:`.cli`), the headless
notebook runner and normaliser (:mod:`.runner`), release and autograding with nbgrader
(:mod:`.grading`), and where the course folders are (:mod:`.paths`).

Students never import it; it imports the student library (``helpers``) only where a
command needs it (``doctor``, ``install-assets``), so ``ftcourse --help`` stays light.
"""
