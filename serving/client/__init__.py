"""The TF Serving protocol client (clients: RestClient, GrpcClient) and input loaders (inputs).
Never imports TensorFlow, TFX, Beam or the server."""
