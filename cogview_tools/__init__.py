"""The project's tooling around the model: the command-line programs (`cogview_tools.cli`, each also a console
script), Hub cards and pushes, training arguments and the data collator, image-caption data on `datasets`, and the
device flags. Scripts, tests and benchmarks import it by name; it is never part of a model's Hub bundle (that is
`modeling_cogview` with the two top-level modules). Nothing is imported here, so `--help` and one-line errors stay
quick."""
