"""Serving over the TF Serving protocol, as four packages with one job each:

- serving.protocol: what the server and its users share (error type, request bodies, header and
  metric names, the model config file, the serving protos without TensorFlow's runtime);
- serving.server: the server (`fmnist serve`), imports neither the client nor the release code;
- serving.client: the REST/gRPC client and input loaders, never imports TensorFlow or the server;
- serving.release: canary releases (model config labels, Vertex traffic, canary analysis), which
  talk to a server through the client only.

Never imports TFX or Beam (.importlinter holds these contracts)."""
