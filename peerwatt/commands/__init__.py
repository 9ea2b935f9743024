"""One module per area of the `peerwatt` command line; each exposes click commands."""
