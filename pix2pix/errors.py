"""The one exception type for errors a user can cause, and how entry points report it."""

from __future__ import annotations

import functools
import logging
import os
import sys


class Pix2PixError(Exception):
    """A user-fixable problem: the message is one line naming the file or key and the fix."""


def debugging() -> bool:
    """`pix2pix --debug ...` or PIX2PIX_DEBUG=1: show tracebacks."""
    return os.environ.get("PIX2PIX_DEBUG", "") not in ("", "0")


def exit_on_error(main):
    """Run `main`; print any error as one line on stderr and exit 1. Logs go to stderr too, so
    stdout holds results only. With debugging() an unexpected error shows its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        try:
            return main(*args, **kwargs)
        except Pix2PixError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except Exception as err:
            if debugging():
                raise
            print(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
            sys.exit(1)

    return wrapper
