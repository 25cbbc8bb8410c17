"""Pure torch modules: fusion networks, graph layers and whole recommenders. No I/O here."""
