"""One module per hop, named ``src_to_dst.py``; each wraps the library made for that hop."""
