"""Image data: built-in offline datasets and image folders."""
