"""Corpus loading, subsampling, packing, SFT formatting and Lightning datamodules."""
