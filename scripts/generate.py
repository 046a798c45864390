#!/usr/bin/env python
"""Draw images from text prompts with a CogView model: `cogview_tools.cli.generate`, also installed as the console script `cogview-generate`. See --help."""

import sys

from cogview_tools.cli.generate import main


if __name__ == "__main__":
    sys.exit(main())
