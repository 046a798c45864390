#!/usr/bin/env python
"""Train or fine-tune (LoRA too) a CogView model with the transformers Trainer: `cogview_tools.cli.train`, also installed as the console script `cogview-train`. See --help."""

import sys

from cogview_tools.cli.train import main


if __name__ == "__main__":
    sys.exit(main())
