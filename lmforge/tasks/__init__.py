"""One module per job, wiring model + objective + data + trainer/generator."""
