"""The data stages and their drivers, and the embedded corpus."""
