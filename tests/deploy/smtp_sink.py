"""A real SMTP server on loopback for the alert-delivery test (aiosmtpd).

STARTTLS with the given certificate (required before AUTH and mail), AUTH PLAIN/LOGIN
against one user and password, and every accepted message written as one file into OUT.
Prints "ready" once it listens. Stops on SIGTERM.

    smtp_sink.py PORT CERT KEY USER PASSWORD OUT
"""

import pathlib
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = self.out / f"{self.count:04}.eml"
        tmp = name.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.rename(name)
        return "250 OK"


def main():
    port, cert, key, user, password, out = sys.argv[1:7]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok)

    controller = Controller(
        Sink(out),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
        # aiosmtpd's LOGIN prompts ("User Name") are not the customary "Username:" that Go
        # clients such as Alertmanager expect; PLAIN is what they use first anyway.
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
