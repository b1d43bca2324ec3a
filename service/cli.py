"""The ``nnverify`` command: the engine's commands plus serve, worker, db and keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .settings import ServiceSettings

if TYPE_CHECKING:  # the client commands import it when run (it needs no torch)
    from .client import Client, JobStatus

Handler = Callable[[argparse.Namespace], int]
SHUTDOWN_GRACE = 5  # seconds a stopping server waits for open requests


def build_parser(engine: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without ``engine``, all but the engine's commands (whose
    import, torch's, takes seconds that a client command need not wait)."""
    parser = argparse.ArgumentParser(prog="nnverify", description="Neural-network verifier.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        if not engine:
            raise ImportError
        from verifier.cli import add_engine_commands
    except ImportError:
        pass
    else:
        add_engine_commands(sub)
    _add_serve(sub)
    _add_worker(sub)
    _add_db(sub)
    _add_keys(sub)
    _add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(engine=not words or words[0] not in CLIENT_COMMANDS).parse_args(words)
    handler: Handler | None = getattr(args, "func", None)
    if handler is None:
        build_parser().print_help()
        return 2
    return _run_handler(handler, args)


def _run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """The command's exit status; whatever it raises is one message on stderr and exit
    status 2, never a traceback (the commands report bad input themselves; this is the
    last boundary)."""
    try:
        status = int(handler(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
        return status
    except KeyboardInterrupt:
        print("nnverify: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except Exception as exc:
        print(f"nnverify {args.command}: internal error (please report it): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the web service with an embedded worker pool")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .logs import configure_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("local_workers", args.workers)) if v is not None}
    settings = ServiceSettings(**overrides)
    configure_logging(settings)
    app = create_app(settings)
    print(f"nnverify serving on http://{settings.host}:{settings.port}/ "
          f"(API at /api/v1, docs at /docs; workers: {settings.worker_backend}; "
          f"API keys {'required' if settings.keys_required else 'not required'})", flush=True)
    # open event streams (GET /jobs/{id}/events) would hold a graceful shutdown up to
    # their 10-minute limit: they are cut after SHUTDOWN_GRACE seconds
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=SHUTDOWN_GRACE)
    return 0


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a Celery worker that takes jobs from Redis")
    p.add_argument("--device", default="cpu", help="device for this worker's jobs: cpu, cuda:N")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    import torch

    from .celery_app import make_celery
    from .logs import configure_logging

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        print(f"nnverify worker: bad --device {args.device!r}: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"nnverify worker: --device {args.device} but torch sees no CUDA device "
              "(is the CUDA build of torch installed?)", file=sys.stderr)
        return 2
    settings = ServiceSettings(worker_device=args.device, worker_backend="celery")
    configure_logging(settings)
    app = make_celery(settings)
    name = f"nnverify-{args.device.replace(':', '')}@%h"
    app.worker_main(["worker", "--pool=solo", f"--loglevel={args.loglevel}",
                     "-Q", settings.celery_queue, "-n", name])
    return 0


def _add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="database migrations")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="migrate to a revision (default: the newest)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_db_upgrade)
    down = dbsub.add_parser("downgrade", help="migrate back (default: one step)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(func=_db_downgrade)
    cur = dbsub.add_parser("current", help="print the database's revision")
    cur.set_defaults(func=_db_current)


def _db_upgrade(args: argparse.Namespace) -> int:
    from . import migrate

    settings = ServiceSettings()
    migrate.upgrade(settings, args.revision)
    print(f"database at revision {migrate.current(settings)}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from . import migrate

    settings = ServiceSettings()
    migrate.downgrade(settings, args.revision)
    print(f"database at revision {migrate.current(settings)}")
    return 0


def _db_current(_args: argparse.Namespace) -> int:
    from . import migrate

    print(migrate.current(ServiceSettings()))
    return 0


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="API keys")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true",
                        help="an admin key: sees and acts on every key's models and jobs "
                             "(a key sees only its own otherwise)")
    create.set_defaults(func=_keys_create)
    ksub.add_parser("list", help="list keys (never the keys themselves)").set_defaults(
        func=_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id, name or prefix")
    revoke.add_argument("key")
    revoke.set_defaults(func=_keys_revoke)


def _keys_session():  # type: ignore[no-untyped-def]
    from . import migrate
    from .db import session_scope

    settings = ServiceSettings()
    migrate.upgrade(settings)
    return session_scope(settings)


def _keys_create(args: argparse.Namespace) -> int:
    from .keys import create_key

    with _keys_session() as session:
        row, key = create_key(session, args.name, "admin" if args.admin else "user")
    print(key)
    print(f"({row.role} key '{row.name}', prefix {row.prefix}: store it now, it is not "
          "shown again)", file=sys.stderr)
    return 0


def _keys_list(_args: argparse.Namespace) -> int:
    from .keys import list_keys

    with _keys_session() as session:
        for row in list_keys(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            created = f"{row.created_at:%Y-%m-%d %H:%M}"
            print(f"{row.id}  {row.prefix}…  {row.name}  {row.role}  created {created}  "
                  f"{state}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from .keys import revoke_key

    with _keys_session() as session:
        row = revoke_key(session, args.key)
        if row is None:
            print(f"no key with id, name or prefix {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked key '{row.name}' ({row.prefix}…)")
    return 0


# -- client commands: a served instance over HTTP (service/client.py) ---------------------

CLIENT_COMMANDS = frozenset({"submit", "status", "results", "certificate", "cancel", "upload"})
EXIT_VERIFIED, EXIT_FALSIFIED, EXIT_ERROR, EXIT_UNDECIDED, EXIT_JOB_FAILED = 0, 1, 2, 3, 4
OUTCOME_EXIT = {"verified": EXIT_VERIFIED, "bounded": EXIT_VERIFIED,
                "falsified": EXIT_FALSIFIED, "unknown": EXIT_UNDECIDED,
                "timeout": EXIT_UNDECIDED, "failed": EXIT_JOB_FAILED,
                "cancelled": EXIT_JOB_FAILED}
CLIENT_EPILOG = (
    "Server: --url, else NNVERIFY_URL, else http://127.0.0.1:$NNVERIFY_PORT (8000); API key: "
    "--key, else NNVERIFY_API_KEY.  Exit status after a wait: 0 verified (or a Lipschitz "
    "job bounded), 1 falsified, 3 unknown or timeout, 4 the job failed or was cancelled; "
    "2 when a request is refused or the server cannot be reached (the message says why).")


def _add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_submit(sub)
    p = _client_parser(sub, "status", "a job's state, progress and verdict")
    p.add_argument("job", help="the job id")
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    p.set_defaults(func=_client_status)
    p = _client_parser(sub, "results", "jobs, newest first, as a table")
    p.add_argument("--model", help="only jobs on this model id")
    p.add_argument("--state", help="only jobs in this state (queued, running, succeeded, ...)")
    p.add_argument("--verdict", help="only jobs with this verdict")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.set_defaults(func=_client_results)
    p = _client_parser(sub, "certificate", "the certificate of a job (job or certificate id)")
    p.add_argument("id", help="a job id (or a certificate id)")
    p.add_argument("-o", "--output", type=Path, help="write it to this file")
    p.set_defaults(func=_client_certificate)
    p = _client_parser(sub, "cancel", "cancel a job")
    p.add_argument("job", help="the job id")
    p.set_defaults(func=_client_cancel)
    p = _client_parser(sub, "upload", "upload an ONNX model and print its id")
    p.add_argument("model", type=Path, help="the ONNX file")
    p.set_defaults(func=_client_upload)


def _client_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                   help_text: str) -> argparse.ArgumentParser:
    """A client command's parser with the options every one takes."""
    p = sub.add_parser(name, help=f"{help_text} (on a server)", description=help_text + ".",
                       epilog=CLIENT_EPILOG)
    p.add_argument("--url", help="the server (default NNVERIFY_URL or http://127.0.0.1:8000)")
    p.add_argument("--key", help="API key (default NNVERIFY_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    return p


def _add_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _client_parser(sub, "submit", "upload a model if needed and submit a property")
    p.add_argument("model", type=Path, help="the ONNX model")
    p.add_argument("property", type=Path,
                   help="the property: VNN-LIB (.vnnlib) or the JSON form (.json)")
    p.add_argument("--timeout", type=float, help="seconds (default: the server's, 60)")
    p.add_argument("--device", help="device for the job, e.g. cpu or cuda:0")
    p.add_argument("--no-bab", dest="bab", action="store_false", default=None,
                   help="no branch-and-bound (bounds and attack only)")
    p.add_argument("--methods", help="bound methods in order, e.g. ibp,crown,alpha-crown")
    p.add_argument("--wait", action="store_true",
                   help="follow the job (progress on stderr) and print its verdict")
    p.set_defaults(func=_client_submit)


def _client(args: argparse.Namespace) -> Client:
    from .client import Client

    return Client(args.url, args.key)


def _client_command(handler: Handler) -> Handler:
    """A client command whose client errors (refusals, unreachable server, unreadable
    files) are one line on stderr and exit status 2."""
    def run(args: argparse.Namespace) -> int:
        from .client import ClientError

        try:
            return handler(args)
        except ClientError as exc:
            print(f"nnverify {args.command}: {exc}", file=sys.stderr)
            return EXIT_ERROR

    run.__doc__ = handler.__doc__
    return run


@_client_command
def _client_submit(args: argparse.Namespace) -> int:
    """Upload (unless the server has it), submit, and with --wait follow to the verdict."""
    with _client(args) as nnv:
        model = nnv.upload_model(args.model)
        methods = args.methods.split(",") if args.methods else None
        job = nnv.submit(model.id, args.property, timeout=args.timeout, device=args.device,
                         bab=args.bab, methods=methods)
        if not args.wait:
            _print_job(job, args.json, brief=True)
            return 0
        print(job.id, flush=True)
        return _follow(nnv, job.id, args.json)


@_client_command
def _client_status(args: argparse.Namespace) -> int:
    with _client(args) as nnv:
        if args.wait:
            return _follow(nnv, args.job, args.json)
        _print_job(nnv.status(args.job), args.json)
        return 0


def _follow(nnv: Client, job_id: str, as_json: bool) -> int:
    """Wait for the job with a progress line on stderr; print its outcome; the exit status
    that outcome maps to."""
    line = ProgressLine(sys.stderr)
    try:
        job = nnv.wait(job_id, on_progress=line.show)
    finally:
        line.close()
    if as_json:
        print(json.dumps(job.raw, indent=2))
    else:
        print(f"{job.outcome}  {job.message}".rstrip())
    return OUTCOME_EXIT.get(job.outcome, EXIT_UNDECIDED)


class ProgressLine:
    """A job's progress on a terminal: one line rewritten in place; elsewhere (a log, a
    pipe) a line whenever the state or stage changes."""

    def __init__(self, stream: TextIO):
        self.stream, self.tty = stream, stream.isatty()
        self.last, self.width = "", 0

    def show(self, job: JobStatus) -> None:
        text = describe_progress(job)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        elif text.split(" ", 2)[:2] != self.last.split(" ", 2)[:2]:
            self.stream.write(text + "\n")
        self.last = text
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def describe_progress(job: JobStatus) -> str:
    """``running bab 12.3/60 s, domains 40 open / 300 done, bound -0.52``: state, stage,
    elapsed against the timeout, domains and the global lower bound so far."""
    p = job.progress or {}
    parts = [job.state, str(p.get("stage", ""))]
    if job.elapsed is not None:
        limit = f"/{job.timeout:g}" if job.timeout else ""
        parts.append(f"{job.elapsed:.1f}{limit} s")
    if p.get("domains_open") or p.get("domains_done"):
        parts.append(f"domains {p.get('domains_open', 0)} open / "
                     f"{p.get('domains_done', 0)} done")
    if isinstance(p.get("lower_bound"), int | float):
        parts.append(f"bound {p['lower_bound']:.4g}")
    return " ".join(x for x in parts[:2] if x) + (", ".join([""] + parts[2:])
                                                   if len(parts) > 2 else "")


def _print_job(job: JobStatus, as_json: bool, brief: bool = False) -> None:
    """A job: its id alone (brief), the server's JSON, or a few lines for people."""
    if as_json:
        print(json.dumps(job.raw, indent=2))
        return
    if brief:
        print(job.id)
        return
    print(f"job {job.id} ({job.kind}) on model {job.model_id}")
    print(f"state: {job.state}" + (f", verdict: {job.verdict}" if job.verdict else ""))
    if job.message:
        print(f"message: {job.message}")
    if not job.finished and job.progress:
        print(f"progress: {describe_progress(job)}")
    if job.seconds is not None:
        print(f"seconds: {job.seconds:.2f}")
    if job.certificate_url:
        print(f"certificate: {job.certificate_url}")


@_client_command
def _client_results(args: argparse.Namespace) -> int:
    """The jobs as a table: job, kind, state, verdict, seconds, created, model."""
    with _client(args) as nnv:
        page = nnv.results(model=args.model, state=args.state, verdict=args.verdict,
                           limit=args.limit)
    if args.json:
        print(json.dumps([j.raw for j in page.items], indent=2))
        return 0
    rows = [("JOB", "KIND", "STATE", "VERDICT", "SECONDS", "CREATED", "MODEL")]
    for j in page.items:
        rows.append((j.id, j.kind, j.state, j.verdict or "-",
                     f"{j.seconds:.1f}" if j.seconds is not None else "-",
                     str(j.raw.get("created_at", ""))[:19].replace("T", " "), j.model_id[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(page.items)} of {page.total} job(s)", file=sys.stderr)
    return 0


@_client_command
def _client_certificate(args: argparse.Namespace) -> int:
    with _client(args) as nnv:
        cert = nnv.certificate(args.id)
    text = json.dumps(cert, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
        print(f"certificate {cert.get('id', '')} written to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


@_client_command
def _client_cancel(args: argparse.Namespace) -> int:
    with _client(args) as nnv:
        _print_job(nnv.cancel(args.job), args.json)
    return 0


@_client_command
def _client_upload(args: argparse.Namespace) -> int:
    with _client(args) as nnv:
        model = nnv.upload_model(args.model)
    if args.json:
        print(json.dumps(model.raw, indent=2))
    else:
        print(model.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
