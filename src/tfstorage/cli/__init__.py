"""The `tfstorage` command."""
