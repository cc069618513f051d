"""Pretrained models: embedders, their files and the registry that names them."""
