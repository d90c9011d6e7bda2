"""The export format: what a published model folder holds and how it loads.

``format``             timm config + safetensors + our settings (``config.json['adni_timm']``)
``input_check``        statistics of the training slices; refuses inputs unlike them
``input_description``  what the training slices were (size, orientation, preprocessing recipe)
``onnx``               ``model.onnx`` beside the weights
``onnx_runtime``       the torch-free runner of ``model.onnx``
"""
