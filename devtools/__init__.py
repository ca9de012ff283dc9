"""Development tooling shared by the tests, the benchmarks and `make run`: the embedded
servers (``services``), real worker processes (``workers``), the local site (``run``).

None of it is imported by the site itself, and it imports no app at module level.
"""
