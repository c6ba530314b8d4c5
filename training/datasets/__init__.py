"""Dataset loaders: a local data directory first, the official download otherwise."""
