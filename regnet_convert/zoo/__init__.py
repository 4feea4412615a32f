"""The pycls model zoo: its packaged manifest, verified resumable downloads, fetch-and-convert."""
