"""What the server, the client and the release operations share, TensorFlow-free: the error type
(errors), predict request bodies (predict_body, vertex_rows), header and metric names (names),
the model config file (model_config) and the serving protos (protos). Imports no other serving
package."""
