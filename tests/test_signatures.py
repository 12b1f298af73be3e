"""The exported SavedModel's files agree with each other."""

import tensorflow as tf

from fmnist.features import CLASSIFY_METHOD_NAME, CLASSIFY_SIGNATURE


def test_fingerprint_describes_the_final_saved_model(exported_model):
    """export_saved_model rewrites saved_model.pb after tf.saved_model.save (the classify
    signature's method_name): fingerprint.pb must describe the file as it is on disk."""
    from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    saved_model = saved_model_pb2.SavedModel.FromString((exported_model / "saved_model.pb").read_bytes())
    assert saved_model.meta_graphs[0].signature_def[CLASSIFY_SIGNATURE].method_name == CLASSIFY_METHOD_NAME

    recorded = tf.saved_model.experimental.read_fingerprint(str(exported_model))
    fresh = fingerprint_pb2.FingerprintDef.FromString(fingerprinting.CreateFingerprintDef(str(exported_model)))
    assert recorded.saved_model_checksum == fresh.saved_model_checksum
    assert recorded.signature_def_hash == fresh.signature_def_hash
    assert recorded.graph_def_program_hash == fresh.graph_def_program_hash
    assert recorded.saved_object_graph_hash == fresh.saved_object_graph_hash
    assert recorded.checkpoint_hash == fresh.checkpoint_hash
