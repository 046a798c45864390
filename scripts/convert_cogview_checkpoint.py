#!/usr/bin/env python
"""Convert an original CogView (or SwissArmyTransformer) checkpoint to a transformers folder: `cogview_tools.cli.convert`, also installed as the console script `cogview-convert`. See --help."""

import sys

from cogview_tools.cli.convert import main


if __name__ == "__main__":
    sys.exit(main())
