"""`python -m regnet_convert`: the `regnet-convert` command (`python -m regnet_convert.cli.validate` is
`regnet-validate`)."""

from regnet_convert.cli.convert import run

if __name__ == "__main__":
    run()
