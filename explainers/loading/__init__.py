"""Everything that turns a user's model file into a `LoadedModel`: cards, format sniffing, the format
adapters (torch.export, state dicts, TorchScript, ONNX, Ultralytics, Hugging Face, timm, MLflow downloads are
read by `analysis.store`), and the architectures a bare state dict is rebuilt into.

Kept apart from the method modules of `explainers/` so that a method never depends on how a model was
stored, and loading never on which method will run (`explainers.loading.models.load_model` is the entry).
"""
