"""DVC stage `check_params`: validate params.yaml -> data/params.ok.

Every other stage depends on data/params.ok (download directly, the rest through it), so DVC runs
this first whenever a result-affecting key changes: a bad value fails here, before any download.
The file's content never changes, so passing this stage re-runs nothing downstream.
"""

import sys

from pix2pix.config import load_config
from pix2pix.errors import exit_on_error
from pix2pix.files import write_text


@exit_on_error
def main(params: str, out: str) -> None:
    load_config(params)
    write_text(out, "params.yaml passed check_params\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
