"""``python -m server``: run the decision server with uvicorn, with its connection limits
(header and keep-alive timeouts, header size, concurrency) from :class:`server.settings.Settings`
and every log line passed through the key-redacting filter. It refuses to start on a
configuration the app would refuse (keys without a visitor token secret, ...), and several
workers with visitor state in process memory unless ``TAILOR_STATE=per-worker`` opts into it;
the demo without a token secret gets a random one, made here once and shared by every worker.

Must not import model_export.
"""

from __future__ import annotations

import argparse
import os
import secrets

__all__ = ["main"]


def main() -> None:
    """Parse arguments and run uvicorn with the app factory."""
    parser = argparse.ArgumentParser(prog="python -m server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bundle", default=None, help="bundle directory (TAILOR_BUNDLE)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; above 1 needs shared state (TAILOR_REDIS_URL) or "
        "TAILOR_STATE=per-worker",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the local demo: keyless requests from loopback, the demo page at / (TAILOR_DEMO=1); "
        "refused together with API keys",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("TAILOR_ACCESS_LOG", "0") == "1",
        help="log every request (off by default: it costs a tenth of a worker's time under "
        "load; metrics and the event log record requests); TAILOR_ACCESS_LOG=1",
    )
    args = parser.parse_args()
    if args.bundle:
        os.environ["TAILOR_BUNDLE"] = args.bundle
    if args.demo:
        os.environ["TAILOR_DEMO"] = "1"
    import logging.config

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from server.observability.redaction import log_config

    logging.config.dictConfig(log_config(LOGGING_CONFIG))
    from server.identity import Identity
    from server.settings import Settings

    logger = logging.getLogger("tailor.server")
    try:
        settings = Settings.from_env()  # a malformed or out-of-range variable: refuse to start
        if settings.demo and not (settings.token_secrets or settings.token_secret_file):
            # one visitor token secret for every worker of this demo run (each worker process
            # builds its app from the environment), so that they all verify each other's tokens
            os.environ["TAILOR_TOKEN_SECRETS"] = secrets.token_urlsafe(32)
            settings = Settings.from_env()
        security = settings.security_config()  # no keys and no demo, or both: refuse to start
        Identity.from_settings(settings, keys=bool(security.keys))  # keys need a token secret
        backend = settings.state_backend()
        if args.workers > 1 and backend == "memory":
            raise ValueError(
                f"--workers {args.workers} with visitor state in process memory would give "
                "each worker its own profiles, suppressions and pinned decisions (a visitor's "
                "past flips between workers, and an erasure reaches one of them): set "
                "TAILOR_REDIS_URL=redis://host:6379/0 to share state in Redis, or "
                "TAILOR_STATE=per-worker to accept per-worker state knowingly"
            )
    except ValueError as exc:
        logger.error("refusing to start: %s", exc)
        raise SystemExit(2) from exc
    # read by server.security.connections in every worker process
    os.environ["TAILOR_HEADER_TIMEOUT"] = str(settings.header_timeout)
    os.environ["TAILOR_MAX_HEADER_BYTES"] = str(settings.max_header_bytes)
    if settings.demo:
        logger.warning(
            "DEMO MODE on http://%s:%d/: keyless requests are accepted from loopback only "
            "(127.0.0.0/8, ::1, with a loopback Host); never expose it",
            args.host,
            args.port,
        )
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        log_config=log_config(LOGGING_CONFIG),
        access_log=args.access_log,
        http="server.security.connections:HeaderLimitedProtocol",
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.limit_concurrency,
    )


if __name__ == "__main__":
    main()
