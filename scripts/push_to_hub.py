#!/usr/bin/env python
"""Push a CogView model folder to the Hugging Face Hub: `cogview_tools.cli.push_to_hub`, also installed as the console script `cogview-push`. See --help."""

import sys

from cogview_tools.cli.push_to_hub import main


if __name__ == "__main__":
    sys.exit(main())
