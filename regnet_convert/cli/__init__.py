"""The command-line tools: one module per command, plus what they share (one error line, exit codes)."""
