"""Deployment: a trained model directory -> a self-contained ONNX directory (export, fusion, int8, checks)."""
