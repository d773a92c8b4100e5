#!/usr/bin/python3
"""A real SMTP server for patchline's tests: aiosmtpd on loopback, storing
every delivered message in a Maildir (with X-MailFrom / X-RcptTo headers
carrying the envelope), optionally requiring STARTTLS and AUTH, and able to
answer the first N messages with a temporary failure.

Usage: server.py --maildir DIR --port-file FILE [--tls-cert C --tls-key K
                 [--implicit-tls]]
                 [--auth USER:PASSWORD] [--fail-first N]
Writes the listening port to FILE once it accepts connections; stops on
SIGTERM.
"""
import argparse
import signal
import socket
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler(Mailbox):
    def __init__(self, maildir, fail_first):
        super().__init__(maildir)
        self.fail_left = fail_first
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.fail_left > 0:
                self.fail_left -= 1
                return "451 4.3.0 try again later (test fault)"
        return await super().handle_DATA(server, session, envelope)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--implicit-tls", action="store_true",
                    help="TLS from the first byte (SMTPS) instead of STARTTLS")
    ap.add_argument("--auth")
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()

    kwargs = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.implicit_tls:
            kwargs.update(ssl_context=context)
        else:
            kwargs.update(tls_context=context, require_starttls=True)
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            # handled=False: aiosmtpd answers 535 itself.
            return AuthResult(success=ok, handled=False)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            # aiosmtpd only counts STARTTLS as TLS; SMTPS is TLS throughout.
            auth_require_tls=bool(args.tls_cert) and not args.implicit_tls,
        )
    port = free_port()
    controller = Controller(
        Handler(args.maildir, args.fail_first),
        hostname="127.0.0.1",
        port=port,
        **kwargs,
    )
    controller.start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os

    os.rename(args.port_file + ".tmp", args.port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
