"""Where a promoted version is written: the config store, Redis and LocalAI."""
