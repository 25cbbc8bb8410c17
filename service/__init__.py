"""Serving microservice: loads a model bundle and answers recommendation requests.

Reads only the bundle (ONNX towers, arrays, manifest); never imports torch, ``models/`` or the
training code except the torch-free bundle format module.
"""
