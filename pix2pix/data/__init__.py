"""Datasets: where they come from (sources, download), how their pairs are found, read and tiled
(pairs, images, palettes, framing, tiles), and how training reads the tiles (device_data, augment)."""
