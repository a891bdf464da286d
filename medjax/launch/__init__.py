"""Starting jobs on accelerator slices."""
