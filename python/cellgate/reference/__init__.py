"""Pure-Python references of the core's decision rules: readable, not fast.

Each module states one rule of the Rust core (``rust/``) in plain Python. They are the oracles of
the property tests (the core must agree with them on random inputs) and the baseline of the
hot-path benchmarks; nothing in the request path uses them.
"""
