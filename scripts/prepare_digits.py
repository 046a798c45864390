#!/usr/bin/env python
"""Write the digits data sets (MNIST, scikit-learn) as captioned image folders: `cogview_tools.cli.prepare_digits`, also installed as the console script `cogview-prepare-digits`. See --help."""

import sys

from cogview_tools.cli.prepare_digits import main


if __name__ == "__main__":
    sys.exit(main())
