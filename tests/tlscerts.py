"""Test certificates, made at test time with the ``openssl`` command.

``make_certs(directory)`` writes a CA, a server certificate for localhost and
127.0.0.1 signed by it, a client certificate signed by it, and a few broken
files, and returns their paths by name.
"""

import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory):
    d = str(directory)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=prefork test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _signed("server", "/CN=localhost", d, ext="server.ext")
    _signed("client", "/C=FR/O=Example, Inc./CN=alice", d)
    # a client certificate no trusted authority signed
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mallory",
             "-keyout", "rogue.key", "-out", "rogue.pem", cwd=d)
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key", cwd=d)
    with open(os.path.join(d, "garbage.pem"), "w") as f:
        f.write("this is not a certificate\n")
    with open(os.path.join(d, "combined.pem"), "w") as f:
        f.write(open(os.path.join(d, "server.pem")).read() + open(os.path.join(d, "server.key")).read())
    names = ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "rogue.pem",
             "rogue.key", "encrypted.key", "garbage.pem", "combined.pem"]
    return {name: os.path.join(d, name) for name in names}


def _signed(name, subject, d, ext=None):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=d)
    extra = ["-extfile", ext] if ext else []
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)
