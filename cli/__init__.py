"""Entry points: the ``bananaflow`` command. It decides "embedded emulator or real Google"."""
