"""Figures drawn from results (tables, arrays, images) that the steps hand over; nothing here computes or reads
atlases. ``figures`` holds the canvas and the atomic save; one module per kind of figure."""
