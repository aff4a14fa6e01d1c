"""What a run leaves behind, and the one way back from it to a working model.

- :mod:`seglab.artifacts.rundir`: the run-folder layout (file names, readers, "finished?").
- :mod:`seglab.artifacts.pretrained`: ``save_pretrained`` / ``from_pretrained`` model folders.
- :mod:`seglab.artifacts.loader`: ``load_inference_model`` for a model folder, run folder,
  Lightning ``.ckpt``, ``.onnx`` or TorchScript file.
- :mod:`seglab.artifacts.runtimes`: ONNX Runtime and TorchScript wrappers of exported files.
- :mod:`seglab.artifacts.device`: ``resolve_device``.

This package sits below the engine and every verb (evaluate, predict, export, bench, compare,
report, studies); it imports none of them.
"""
