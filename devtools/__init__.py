"""Development tooling shared by the tests, the benchmarks and `make run`: the embedded
servers (``services``), real worker processes (``workers``), the local site (``run``).

The site itself never imports it.
"""
