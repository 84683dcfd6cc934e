"""``sarseg jobs ...``: the command line of the background jobs (the manager itself is ``core/jobs.py``).

``sarseg jobs run-child DIR`` is the runner a job is started under (``python -m sarseg jobs run-child DIR``);
it is left out of the help.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from .core.errors import EXIT_OK
from .core.jobs import DEVICES, KEEP, KEEP_DEFAULT, Job, JobError, JobManager, merge_args, run_child

JOB_COMMANDS = ("pretrain", "finetune", "segment")  # the commands that report --progress json
_ROOT_HELP = "jobs folder (default: $SARSEG_JOBS, else jobs/ in the per-user sarseg data folder)"


def add_parser(subparsers) -> None:
    """Add ``jobs`` with its sub-commands to the ``sarseg`` parser's sub-parsers."""
    p = subparsers.add_parser("jobs", help="background jobs: submit, list, follow, cancel, resume")
    p.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
    visible = ("list", "show", "cancel", "resume", "log", "prune", "submit")
    sub = p.add_subparsers(dest="jobs_command", required=True, parser_class=type(p), metavar="{" + ",".join(visible) + "}")

    def command(name: str, help: str | None) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help) if help else sub.add_parser(name)  # no help: left out of --help
        q.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=_ROOT_HELP)
        return q

    q = command("list", "jobs with state and progress")
    q.add_argument("--json", action="store_true", help="one JSON list of jobs")
    q = command("show", "one job with its latest progress")
    q.add_argument("id")
    q.add_argument("--json", action="store_true", help="the whole job record as JSON")
    q = command("cancel", "stop a job (it checkpoints; resume it later)")
    q.add_argument("id")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds before SIGKILL")
    q = command("resume", "run a stopped job again from its checkpoint: resume ID [-- --steps N ...]")
    q.add_argument("id")
    q.add_argument("extra", nargs=argparse.REMAINDER, help="options replacing the job's own")
    q = command("log", "the job's log (stderr)")
    q.add_argument("id")
    q = command("prune", "remove the folders of all but the last finished jobs (queued and running ones stay)")
    q.add_argument("--keep", type=int, default=None,
                   help=f"finished jobs kept (default: ${KEEP}, else {KEEP_DEFAULT}; every submit prunes too)")
    q = command("submit", "queue a sarseg command: submit [--device D] KIND -- OPTIONS (KIND: "
                          + ", ".join(JOB_COMMANDS) + ")")
    q.add_argument("--device", choices=DEVICES, default="cpu", help="the queue the job waits in")
    q.add_argument("--python", default=None, help="interpreter for the job (default: this one)")
    q.add_argument("kind", help="the sarseg command: " + ", ".join(JOB_COMMANDS))
    q.add_argument("args", nargs=argparse.REMAINDER, help="its options, after --")
    q = command("run-child", None)
    q.add_argument("folder", type=Path)


def _strip_dashes(tokens: Sequence[str]) -> list[str]:
    tokens = list(tokens)
    return tokens[1:] if tokens[:1] == ["--"] else tokens


def _format(job: Job) -> str:
    pr = job.progress
    step = f"{pr.get('step')}/{pr.get('steps')}" if pr.get("steps") else "-"
    eta = f"{pr['eta_s']:.0f}s" if job.state == "running" and isinstance(pr.get("eta_s"), (int, float)) else "-"
    loss = f"{pr['loss']:.4f}" if isinstance(pr.get("loss"), (int, float)) else "-"
    return f"{job.id:32} {job.kind:9} {job.state:11} {job.device:5} {step:>13} {eta:>7} {loss:>8}  {job.out or ''}"


def _submit(manager: JobManager, args: argparse.Namespace, check: Callable[[list[str]], object]) -> int:
    """``submit KIND -- OPTIONS`` (the command is KIND) or ``submit KIND -- KIND OPTIONS``; options of submit
    itself may also come after KIND. The command line is checked here (``check``: the whole sarseg parser),
    so a typo fails now, not in the job."""
    rest, device, python = list(args.args), args.device, args.python
    if "--" in rest and rest[0] != "--":  # submit KIND --device D -- OPTIONS
        head, rest = rest[:rest.index("--")], rest[rest.index("--"):]
        extra = argparse.ArgumentParser(prog="sarseg jobs submit", add_help=False, allow_abbrev=False)
        extra.add_argument("--device", choices=DEVICES, default=device)
        extra.add_argument("--python", default=python)
        known, unknown = extra.parse_known_args(head)
        if unknown:
            raise JobError("submit", f"unexpected {' '.join(unknown)} before --")
        device, python = known.device, known.python
    rest = _strip_dashes(rest)
    if args.kind not in JOB_COMMANDS:
        raise JobError("submit", f"KIND must be one of {', '.join(JOB_COMMANDS)} (got {args.kind!r})")
    argv = rest if rest[:1] == [args.kind] else [args.kind, *rest]
    if len(argv) == 1:
        raise JobError("submit", f"no sarseg arguments given (submit {args.kind} -- --out DIR ...)")
    try:
        check(argv)
    except SystemExit as exc:  # the parser said what is wrong
        return int(exc.code or 0)
    if python:
        manager.python = python
    print(manager.submit(args.kind, argv, device).id)
    return EXIT_OK


def run(args: argparse.Namespace, check: Callable[[list[str]], object]) -> int:
    """``sarseg jobs ...``; a JobError (unknown job and such) reaches the caller as BadInput (exit 2).
    ``check`` parses a submitted job's command line (exits through SystemExit when it is wrong)."""
    cmd = args.jobs_command
    if cmd == "run-child":
        return run_child(args.folder)
    manager = JobManager(getattr(args, "root", None) or None)
    if cmd == "list":
        jobs = manager.list()
        if args.json:
            print(json.dumps([j.to_dict() for j in jobs], indent=1))
        else:
            print(f"{'ID':32} {'KIND':9} {'STATE':11} {'DEV':5} {'STEP':>13} {'ETA':>7} {'LOSS':>8}  OUT")
            for job in jobs:
                print(_format(job))
    elif cmd == "show":
        job = manager.poll(args.id)
        print(json.dumps(job.to_dict(), indent=1) if args.json else _format(job))
    elif cmd == "cancel":
        if not 0 <= args.timeout < float("inf"):
            raise JobError("--timeout", f"must be a number of seconds, 0 or more (got {args.timeout})")
        job = manager.cancel(args.id, args.timeout)
        print(f"{job.id}: {job.state}")
    elif cmd == "resume":
        extra = _strip_dashes(args.extra)
        try:  # the command line the job will run, checked now (a typo fails here, not in the job)
            check(merge_args([*manager.poll(args.id).argv, "--resume"], extra))
        except SystemExit as exc:
            return int(exc.code or 0)
        job = manager.resume(args.id, extra)
        print(f"{job.id}: {job.state}")
    elif cmd == "log":
        sys.stdout.write(manager.log(args.id))
    elif cmd == "prune":
        if args.keep is not None and args.keep < 0:
            raise JobError("--keep", f"must be 0 or more (got {args.keep})")
        for job_id in manager.prune(args.keep):
            print(f"{job_id}: removed")
    else:
        return _submit(manager, args, check)
    return EXIT_OK
