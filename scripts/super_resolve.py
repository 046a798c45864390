#!/usr/bin/env python
"""Double images with a super-resolution model: `cogview_tools.cli.super_resolve`, also installed as the console
script `cogview-super-resolve`. See --help."""

import sys

from cogview_tools.cli.super_resolve import main


if __name__ == "__main__":
    sys.exit(main())
