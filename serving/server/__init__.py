"""The TF Serving protocol server (`fmnist serve`): process (options, TLS, tensorflow_model_server
or this server), manager (versions and labels), servables + warmup (loading), service (what both
transports do), rest / grpc_service (transports), codec, batching, shadow, request_log,
prometheus. Imports neither serving.client nor serving.release."""
