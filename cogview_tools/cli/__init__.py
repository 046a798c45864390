"""The command-line programs; `scripts/NAME.py` and the `cogview-*` console scripts run their `main()`."""
