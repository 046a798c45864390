"""Regenerate the remote-code bundle of saved CogView model folders (the copies committed under models/ among them):
every bundle file written anew from this package's sources, config.json's auto_map and custom_pipelines refreshed.
The weights and every other file stay as they are. tests/test_bundled_model.py fails while a committed copy is stale."""

import argparse
import json
import sys
from pathlib import Path

from modeling_cogview.remote_code import write_remote_code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="+", help="saved CogView model folders (save_pretrained of a model)")
    args = parser.parse_args(argv)
    for folder in map(Path, args.folders):
        config_file = folder / "config.json"
        if not config_file.is_file() or json.loads(config_file.read_text(encoding="utf-8")).get("model_type") != "cogview":
            print(f"error: {folder} is not a saved CogView model (no config.json of model_type cogview)", file=sys.stderr)
            return 2
        write_remote_code(folder, model_class="modeling_cogview.CogViewForCausalLM")
        print(f"refreshed the code of {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
