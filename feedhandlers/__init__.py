"""Feed handlers: the feed base and each feed."""
