#!/usr/bin/env python
"""Score images by how well a CogView model captions them with a prompt (self-reranking): `cogview_tools.cli.rerank`, also installed as the console script `cogview-rerank`. See --help."""

import sys

from cogview_tools.cli.rerank import main


if __name__ == "__main__":
    sys.exit(main())
