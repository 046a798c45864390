#!/usr/bin/env python
"""Train a CogView VQ-VAE image tokenizer: `cogview_tools.cli.train_vqvae`, also installed as the console script `cogview-train-vqvae`. See --help."""

import sys

from cogview_tools.cli.train_vqvae import main


if __name__ == "__main__":
    sys.exit(main())
