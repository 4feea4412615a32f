"""File-system safety shared by every command: input files checked before they are read (`inputs`), outputs
written atomically and never over an input (`outputs`)."""
