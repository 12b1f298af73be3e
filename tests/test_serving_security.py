"""Secure by default: TLS on both transports (and for tensorflow_model_server's gRPC), loopback
unless told otherwise, and per-request bounds on bytes and instances, on a self-signed
certificate made here for localhost and 127.0.0.1."""

import datetime
import ipaddress
import re
import shutil
import ssl
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import text_format

from cli.main import main, resolved, serve_options
from fmnist import features
from serving.client.clients import ClientError, GrpcClient, RestClient
from serving.server.process import RunningServer, ServerOptions, load_tls, ssl_config_class, tf_serving_command

MODEL = features.MODEL_NAME
MAX_REQUEST_BYTES = 1 << 20
MAX_INSTANCES = 8


def _self_signed(directory: Path, name: str, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """(certificate, key) PEM files: a self-signed certificate for localhost and 127.0.0.1, its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           encryption))
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, *features.IMAGE_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_model, tls_files):
    """One version behind TLS, host left at its default."""
    base = tmp_path_factory.mktemp("secure-serving") / "models"
    shutil.copytree(exported_model, base / "1")
    cert_file, key_file = tls_files
    running = RunningServer(ServerOptions(base_path=str(base), rest_port=0, grpc_port=0,
                                          max_request_bytes=MAX_REQUEST_BYTES, max_request_instances=MAX_INSTANCES,
                                          tls_cert_file=str(cert_file), tls_key_file=str(key_file))).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(server, tls_files):
    client = RestClient(f"127.0.0.1:{server.rest_port}", MODEL, ca_file=str(tls_files[0]), timeout=10)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server, tls_files):
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, ca_file=str(tls_files[0]), timeout=10)
    yield client
    client.close()


# -- TLS --------------------------------------------------------------------------------------
def test_both_transports_answer_over_tls_like_the_saved_model(rest, grpc_client, images, exported_model):
    expected = tf.saved_model.load(str(exported_model)).signatures[features.SERVING_DEFAULT](
        images=tf.constant(images))["probabilities"].numpy()
    assert rest.model_url.startswith("https://127.0.0.1:")
    via_rest = rest.predict(images)
    np.testing.assert_allclose(via_rest.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(grpc_client.predict(images).probabilities, expected, atol=1e-5)
    classified = grpc_client.classify(images)
    np.testing.assert_allclose([[score for _, score in row] for row in classified], expected, atol=1e-5)
    assert via_rest.version == 1


def test_plaintext_and_untrusted_clients_are_refused(server, tmp_path, images):
    other_ca, _ = _self_signed(tmp_path, "other")
    refused = [
        (RestClient(f"http://127.0.0.1:{server.rest_port}", MODEL, timeout=10), "Server disconnected"),
        # The system's CAs did not sign it, nor did another CA.
        (RestClient(f"https://127.0.0.1:{server.rest_port}", MODEL, timeout=10), "CERTIFICATE_VERIFY_FAILED"),
        (RestClient(f"127.0.0.1:{server.rest_port}", MODEL, ca_file=str(other_ca), timeout=10),
         "CERTIFICATE_VERIFY_FAILED"),
        (GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, timeout=10), "gRPC UNAVAILABLE"),  # insecure channel
        (GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, ca_file=str(other_ca), timeout=10),
         "CERTIFICATE_VERIFY_FAILED"),
    ]
    for client, reason in refused:
        with pytest.raises(ClientError, match=reason):
            client.predict(images[:1])
        client.close()


def test_predict_cli_over_tls_uses_no_tensorflow_runtime(server, tls_files, predict_cli):
    code, lines, stderr = predict_cli(2, "--transport", "grpc", "--server", f"127.0.0.1:{server.grpc_port}",
                                      "--tls-ca", str(tls_files[0]))
    assert code == 0, stderr
    assert [line.split()[0] for line in lines[:2]] == ["test:0", "test:1"]
    assert lines[-1] == "TF runtime loaded: False"


# -- loopback by default ----------------------------------------------------------------------
def test_the_default_host_is_loopback(server):
    serve_defaults = serve_options(resolved(["serve"])[1], {})
    assert ServerOptions().host == serve_defaults.host == "127.0.0.1"
    assert server.options.host == "127.0.0.1"
    assert server._socket.getsockname()[0] == "127.0.0.1"
    assert serve_defaults.max_request_instances == ServerOptions().max_request_instances
    assert serve_defaults.max_request_bytes == ServerOptions().max_request_bytes


# -- bounds -----------------------------------------------------------------------------------
def test_too_many_instances_get_one_line_errors_on_both_transports(rest, grpc_client):
    at_limit = np.zeros((MAX_INSTANCES, *features.IMAGE_SHAPE), np.float32)
    over = np.zeros((MAX_INSTANCES + 1, *features.IMAGE_SHAPE), np.float32)
    assert rest.predict(at_limit).probabilities.shape == (MAX_INSTANCES, 10)
    assert len(grpc_client.classify(at_limit)) == MAX_INSTANCES
    message = f"request has {MAX_INSTANCES + 1} instances, over the limit of {MAX_INSTANCES} per request"
    for call, code in [(rest.predict, "HTTP 400"), (rest.classify, "HTTP 400"),
                       (grpc_client.predict, "gRPC INVALID_ARGUMENT"), (grpc_client.classify, "gRPC INVALID_ARGUMENT")]:
        with pytest.raises(ClientError) as raised:
            call(over)
        assert str(raised.value).startswith(f"{code}: {message}") and "\n" not in str(raised.value)


def test_oversized_messages_are_refused_before_any_handler(server, grpc_client, tls_files):
    too_big = np.zeros((MAX_REQUEST_BYTES // (4 * features.NUM_PIXELS) + 1, *features.IMAGE_SHAPE), np.float32)
    with pytest.raises(ClientError, match="gRPC RESOURCE_EXHAUSTED"):
        grpc_client.predict(too_big)
    with httpx.Client(verify=ssl.create_default_context(cafile=tls_files[0])) as client:
        response = client.post(f"https://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict",
                               content=b" " * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]


# -- tensorflow_model_server ------------------------------------------------------------------
def test_tf_serving_gets_an_ssl_config_for_grpc(tmp_path, tls_files):
    cert_file, key_file = tls_files
    (tmp_path / "plain").mkdir()
    plain = tf_serving_command(ServerOptions(base_path="/models/m"), str(tmp_path / "plain"))
    assert not any(arg.startswith("--ssl_config_file") for arg in plain)

    command = tf_serving_command(ServerOptions(base_path="/models/m", tls_cert_file=str(cert_file),
                                               tls_key_file=str(key_file)), str(tmp_path))
    (flag,) = [arg for arg in command if arg.startswith("--ssl_config_file=")]
    path = Path(flag.split("=", 1)[1])
    config = text_format.Parse(path.read_text(), ssl_config_class()())
    assert config.server_cert == cert_file.read_text() and config.server_key == key_file.read_text()
    assert not config.client_verify and not config.custom_ca
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the private key


# -- misconfiguration -------------------------------------------------------------------------
@pytest.mark.parametrize(("files", "message"), [
    (("server.crt", None), "tls_cert_file (--tls-cert) was given without tls_key_file (--tls-key)"),
    ((None, "server.key"), "tls_key_file (--tls-key) was given without tls_cert_file (--tls-cert)"),
    (("missing.crt", "server.key"), "cannot read the TLS certificate"),
    (("server.crt", "missing.key"), "cannot read the TLS private key"),
    (("server.key", "server.key"), "holds no PEM certificate"),
    (("server.crt", "server.crt"), "holds no PEM private key"),
    (("server.crt", "other.key"), "does not match the certificate"),
    (("locked.crt", "locked.key"), "is encrypted"),
])
def test_bad_tls_files_fail_in_one_line(tmp_path, files, message):
    _self_signed(tmp_path, "server")
    _self_signed(tmp_path, "other")
    _self_signed(tmp_path, "locked", passphrase=b"secret")
    cert, key = (str(tmp_path / name) if name else None for name in files)
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        load_tls(ServerOptions(tls_cert_file=cert, tls_key_file=key))
    assert "\n" not in str(raised.value)


def test_cli_rejects_a_certificate_without_a_key_in_one_line(tls_files, sample_dir, capsys):
    assert main(["serve", "--tls-cert", str(tls_files[0]), "--tf-serving", "no"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: TLS needs a certificate and its private key: "
        "tls_cert_file (--tls-cert) was given without tls_key_file (--tls-key)"]
    assert main(["predict", "test:0", "--data-dir", str(sample_dir), "--tls-ca", "/nonexistent/ca.pem"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: cannot read the CA file /nonexistent/ca.pem: No such file or directory"]
