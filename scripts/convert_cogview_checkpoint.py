#!/usr/bin/env python
"""Convert an original CogView (or SwissArmyTransformer) checkpoint to a transformers folder. See --help."""

import sys

from modeling_cogview.convert_cogview_checkpoint import main


if __name__ == "__main__":
    sys.exit(main())
