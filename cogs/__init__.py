"""Slash-command cogs. Each talks to the core only through the services on `ImagineBot`."""
