"""The ``nnverify`` command: the engine's commands plus serve, worker, db and keys."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .settings import ServiceSettings

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnverify", description="Neural-network verifier.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        from verifier.cli import add_engine_commands
    except ImportError:
        pass
    else:
        add_engine_commands(sub)
    _add_serve(sub)
    _add_worker(sub)
    _add_db(sub)
    _add_keys(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("local_workers", args.workers)) if v is not None}
    settings = ServiceSettings(**overrides)
    app = create_app(settings)
    print(f"nnverify serving on http://{settings.host}:{settings.port}/ "
          f"(API at /api/v1, docs at /docs; workers: {settings.worker_backend}; "
          f"API keys {'required' if settings.keys_required else 'not required'})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a Celery worker that takes jobs from Redis")
    p.add_argument("--device", default="cpu", help="device for this worker's jobs: cpu, cuda:N")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    import torch

    from .celery_app import make_celery

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
        row, key = create_key(session, args.name)
    print(key)
    print(f"(key '{row.name}', prefix {row.prefix}: store it now, it is not shown again)",
          file=sys.stderr)
    return 0


def _keys_list(_args: argparse.Namespace) -> int:
    from .keys import list_keys

    with _keys_session() as session:
        for row in list_keys(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            created = f"{row.created_at:%Y-%m-%d %H:%M}"
            print(f"{row.id}  {row.prefix}…  {row.name}  created {created}  {state}")
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


if __name__ == "__main__":
    sys.exit(main())
