#!/usr/bin/env python
"""Tokenize image-caption data into CogView training data: `cogview_tools.cli.tokenize_dataset`, also installed as the console script `cogview-tokenize`. See --help."""

import sys

from cogview_tools.cli.tokenize_dataset import main


if __name__ == "__main__":
    sys.exit(main())
