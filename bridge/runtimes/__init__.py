"""One runner per runtime (torch, onnxruntime, tensorflow/keras, litert) behind bridge.runtimes.base.Runner."""
