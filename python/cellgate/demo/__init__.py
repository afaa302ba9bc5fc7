"""The embedded demo: a stand-in cell server, its topology and its customers."""
