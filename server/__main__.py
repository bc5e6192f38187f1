"""``python -m server``: run the decision server with uvicorn.

Must not import model_export.
"""

from __future__ import annotations

import argparse
import logging
import os

__all__ = ["main"]


def main() -> None:
    """Parse arguments and run uvicorn with the app factory."""
    parser = argparse.ArgumentParser(prog="python -m server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bundle", default=None, help="bundle directory (TAILOR_BUNDLE)")
    parser.add_argument("--workers", type=int, default=1)
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
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from server.settings import Settings

    settings = Settings.from_env()
    settings.security_config()  # refuse to start without keys unless this is the demo
    logger = logging.getLogger("tailor.server")
    if settings.demo:
        logger.warning(
            "DEMO MODE on http://%s:%d/: keyless requests are accepted from loopback only "
            "(127.0.0.0/8, ::1, with a loopback Host); %s",
            args.host,
            args.port,
            "API keys are also accepted" if settings.security else "no API keys are configured",
        )
    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
