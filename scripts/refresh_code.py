#!/usr/bin/env python
"""Regenerate the remote-code bundle of saved model folders: `cogview_tools.cli.refresh_code`, also installed as the
console script `cogview-refresh-code`. See --help."""

import sys

from cogview_tools.cli.refresh_code import main


if __name__ == "__main__":
    sys.exit(main())
