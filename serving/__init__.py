"""Serving over the TF Serving protocol: the server (`fmnist serve`), its client and input loaders.

Never imports TFX or Beam; the client side (client, inputs, protos) never imports TensorFlow."""
