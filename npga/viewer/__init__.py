"""The interactive web viewer (`npga view`): a viser server that shows an avatar in the browser."""
