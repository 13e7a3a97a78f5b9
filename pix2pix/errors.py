"""The one exception type for errors a user can cause, and how entry points report it."""

from __future__ import annotations

import functools
import logging
import sys


class Pix2PixError(Exception):
    """A user-fixable problem: the message is one line naming the file or key and the fix."""


def exit_on_error(main):
    """Run `main`; print a Pix2PixError as one line on stderr and exit 1 (no traceback)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return main(*args, **kwargs)
        except Pix2PixError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    return wrapper
