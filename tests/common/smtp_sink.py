#!/usr/bin/env python3
"""A real SMTP server on loopback for the e-mail delivery tests (aiosmtpd, installed by
deploy/local/services.sh as the Debian package python3-aiosmtpd).

    /usr/bin/python3 smtp_sink.py PORT DIR [USER PASSWORD] [--tls starttls|implicit --cert CRT --key KEY]

Listens on 127.0.0.1:PORT. With USER and PASSWORD, AUTH (PLAIN/LOGIN) is required and
checked. Without --tls the server is plain and offers no STARTTLS (AUTH in clear: loopback
only). With `--tls starttls` it offers STARTTLS with the certificate CRT and refuses every
command but EHLO/STARTTLS/QUIT before it (and AUTH before TLS); with `--tls implicit` it
speaks TLS from the first byte (smtps). Every message accepted is written to
DIR/NNNNN.json (written to a temporary name, then renamed) with the envelope, the login,
the raw message (as received, still MIME-encoded) and what Python's own e-mail parser
decodes from it: the headers (RFC 2047 words decoded) and the text body (its
Content-Transfer-Encoding and charset decoded), and the TLS version the message came over
("tls": e.g. "TLSv1.3", null in clear) and whether STARTTLS was used. Prints "ready" once
it listens.
"""
import argparse
import email
import email.policy
import json
import os
import ssl
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        login = session.auth_data if session.authenticated else None
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "raw": envelope.content.decode("utf-8", "replace"),
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "transfer_encoding": str(msg.get("content-transfer-encoding", "")),
            "text": body.get_content() if body is not None else "",
            "tls": tls.version() if tls is not None else None,
            "starttls": session.ssl is not None,
        }
        with self.lock:
            self.n += 1
            name = os.path.join(self.out, "%05d.json" % self.n)
        with open(name + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(name + ".tmp", name)
        return "250 OK queued as %d" % self.n


def main():
    # AUTH over plain text is what the test wants (loopback only); no warning about it.
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("creds", nargs="*")
    ap.add_argument("--tls", choices=["starttls", "implicit"])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    port, out, creds = a.port, a.out, a.creds

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and len(creds) == 2
            and auth_data.login.decode() == creds[0]
            and auth_data.password.decode() == creds[1]
        )
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    kwargs = {}
    if creds:
        kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        if a.tls == "starttls":
            # AUTH only after STARTTLS, nothing but EHLO/STARTTLS/QUIT before it.
            kwargs.update(tls_context=ctx, require_starttls=True)
            if creds:
                kwargs["auth_require_tls"] = True
        else:
            kwargs["ssl_context"] = ctx
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
