#!/usr/bin/env python
"""Caption images with a CogView model: `cogview_tools.cli.caption`, also installed as the console script `cogview-caption`. See --help."""

import sys

from cogview_tools.cli.caption import main


if __name__ == "__main__":
    sys.exit(main())
