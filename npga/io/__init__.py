"""Reading and writing files: videos, images, checkpoints, PLY."""
