"""Numbers over images: region shares, bootstrap and exact intervals, clustering."""
