#!/usr/bin/env python
"""The web demo (gradio): `cogview_tools.cli.demo`, also installed as the console script `cogview-demo`. See --help."""

import sys

from cogview_tools.cli.demo import main


if __name__ == "__main__":
    sys.exit(main())
