#!/usr/bin/python3
"""
seeds.py - write the committed seed corpora of the fuzz targets whose
inputs are framed (tests/fuzz/corpus/<target>/<name>).

  /usr/bin/python3 tests/fuzz/seeds.py [TARGET...]

Each target's input format is described at the top of its
tests/fuzz/fuzz_*.c; the functions here build valid examples of it, so
the fuzzer starts deep in the protocol instead of at its first byte. Run
it after changing a format and commit the result. A seed file is named
after what it exercises; files this script does not know are left alone.
"""

import os
import sys

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def chunks(data, sizes=(64,)):
    """The read framing of the session and client targets: a byte n & 63
    then n + 1 octets. sizes cycle, so reads end at varied points."""
    out = bytearray()
    i = k = 0
    while i < len(data):
        n = min(sizes[k % len(sizes)], 64, len(data) - i)
        out.append(n - 1)
        out += data[i:i + n]
        i += n
        k += 1
    return bytes(out)


# ---------------------------------------------------------------------------
# fuzz_smtp_addr: the input is the address text itself

def smtp_addr():
    return {
        "plain": b"<alice@example.test>",
        "null": b"<>",
        "postmaster": b"<Postmaster>",
        "route": b"<@relay1.test,@relay2.test:bob@example.test>",
        "quoted": b'<"a b\\"c"@example.test>',
        "ipv4": b"<x@[192.0.2.1]>",
        "ipv6": b"<x@[IPv6:2001:db8::1]>",
        "utf8": "<d\u00e9j\u00e0@\u4f8b\u3048.\u30c6\u30b9\u30c8>".encode(),
        "idn": b"<u@xn--bcher-kva.example>",
        "param": b"<a@b.test> SIZE=100",
        "xtext": b"rfc822;a+2Bb+3Dc@example.test",
        "long": b"<" + b"l" * 64 + b"@" + b"d" * 63 + b".test>",
    }


# ---------------------------------------------------------------------------
# fuzz_smtp_session / fuzz_smtp_auth: options byte(s), then client octets

BODY = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n"
        b"Message-ID: <1@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"\r\nhello\r\n..dot\r\n.\r\n")


def smtp_session():
    basic = (b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n"
             b"RCPT TO:<postmaster@localhost>\r\nDATA\r\n" + BODY + b"QUIT\r\n")
    return {
        "basic": b"\x00" + chunks(basic, (64, 7, 33)),
        "basic_relay": b"\x02" + chunks(basic),
        "basic_queue_fails": b"\x04" + chunks(basic, (5,)),
        "basic_strict": b"\x01" + chunks(basic, (1, 2, 3)),
        "helo_verbs": b"\x00" + chunks(
            b"HELO client.test\r\nNOOP\r\nHELP\r\nVRFY postmaster\r\nEXPN x\r\n"
            b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nRSET\r\nQUIT\r\n"),
        "params": b"\x02" + chunks(
            b"EHLO c.test\r\nMAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME "
            b"RET=HDRS ENVID=QQ+2Bx\r\nRCPT TO:<b@example.test> "
            b"NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.test\r\n"
            b"RCPT TO:<c@example.test> NOTIFY=NEVER\r\nDATA\r\n" + BODY),
        "smtputf8": b"\x02" + chunks(
            "EHLO c.test\r\nMAIL FROM:<j\u00f6@example.test> SMTPUTF8\r\n"
            "RCPT TO:<\u00fc@\u4f8b\u3048.test>\r\nDATA\r\nSubject: \u00e9\r\n\r\nx\r\n.\r\n"
            .encode()),
        "bdat": b"\x02" + chunks(
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
            b"BDAT 12\r\nSubject: x\r\nBDAT 9 LAST\r\n\r\nbody\r\n\r\nQUIT\r\n", (13, 64)),
        "bdat_bad": b"\x00" + chunks(
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<postmaster>\r\n"
            b"BDAT 3 NOTLAST\r\nBDAT x\r\nBDAT 99999999999999999999\r\nDATA\r\n.\r\n"),
        "bare_newlines": b"\x01" + chunks(
            b"EHLO c.test\nMAIL FROM:<a@b.test>\r\nRCPT TO:<postmaster>\r\nDATA\r\n"
            b"a\nb\rc\r\n.\n.\r\n\r\n.\r\nQUIT\r\n", (3, 9)),
        "long_lines": b"\x00" + chunks(b"EHLO " + b"x" * 600 + b"\r\nMAIL FROM:<" +
                                       b"a" * 300 + b"@b.test>\r\nNOOP\r\n"),
        "errors": b"\x00" + chunks(
            b"MAIL FROM:<a@b>\r\nFOO\r\nEHLO\r\nRCPT TO:<x>\r\nDATA\r\n"
            b"MAIL FROM:a@b\r\nMAIL FROM:<@x:>\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
            b"\x00\xff\r\nQUIT\r\n"),
        "many_rcpts": b"\x01" + chunks(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n" +
            b"".join(b"RCPT TO:<u%d@localhost>\r\n" % i for i in range(5)) +
            b"RCPT TO:<u1@localhost>\r\nDATA\r\n" + b"Received: x\r\n" * 3 + BODY),
        "pipelined_after_data": b"\x02" + chunks(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
            b"x\r\n.\r\nMAIL FROM:<e@f.test>\r\nRCPT TO:<g@h.test>\r\nDATA\r\n"
            b"y\r\n.\r\nQUIT\r\n"),
    }


# ---------------------------------------------------------------------------
# fuzz_smtp_client: two options bytes, body length, body, server octets

EHLO_ALL = (b"250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n"
            b"250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
            b"250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250 CHUNKING\r\n")
TX_OK = (b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n"
         b"354 go ahead\r\n250 2.0.0 queued as X\r\n")


def client_input(opt, opt2, body, server, sizes=(64,)):
    return bytes([opt, opt2, len(body)]) + body + chunks(server, sizes)


def smtp_client():
    body = b"Subject: x\r\n\r\nbody\r\n.line\r\n"
    three = TX_OK * 3 + b"221 2.0.0 bye\r\n"
    return {
        "three_tx": client_input(0, 0, body, b"220 mx.test ESMTP\r\n" + EHLO_ALL + three),
        "three_tx_split": client_input(1, 0, body, b"220 mx.test\r\n" + EHLO_ALL + three,
                                       (1, 5, 17)),
        "multiline": client_input(0, 0, body,
                                  b"220-mx.test\r\n220-second\r\n220 third\r\n" + EHLO_ALL +
                                  b"250-2.1.0 a\r\n250 2.1.0 b\r\n"
                                  b"550-5.1.1 no\r\n550 5.1.1 such user\r\n"
                                  b"452 4.5.3 too many\r\n250 2.1.5 ok\r\n354 go\r\n"
                                  b"250-2.0.0 ok\r\n250 2.0.0 queued\r\n421 4.3.2 bye\r\n"),
        "helo_fallback": client_input(0, 0, body, b"220 old.test\r\n500 what\r\n250 ok\r\n"
                                      b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"
                                      b"250 ok\r\n"),
        "greeting_554": client_input(0, 0, body, b"554 5.7.1 no service\r\n"),
        "rcpt_refused_rset": client_input(0, 0, body, b"220 mx\r\n" + EHLO_ALL +
                                          b"250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n"
                                          b"550 5.1.1 no\r\n554 5.5.1 no valid rcpts\r\n"
                                          b"250 2.0.0 reset\r\n" + three),
        "dsn_utf8": client_input(4 | 8 | 16, 0, "Subject: \u00e9\r\n\r\n\u00e9\r\n".encode(),
                                 b"220 mx\r\n" + EHLO_ALL + three),
        "no_ext_8bit": client_input(8, 0, b"\xe9\r\n", b"220 mx\r\n250 mx\r\n" + three),
        "starttls_may": client_input(0, 1, body, b"220 mx\r\n" + EHLO_ALL + b"220 go ahead\r\n" +
                                     EHLO_ALL + three),
        "starttls_must_refused": client_input(0, 2, body, b"220 mx\r\n" + EHLO_ALL +
                                              b"454 4.7.0 no tls\r\n"),
        "starttls_must_fails": client_input(0, 2 | 16, body, b"220 mx\r\n" + EHLO_ALL +
                                            b"220 go ahead\r\n"),
        "auth_plain": client_input(0, 1 | 4, body, b"220 mx\r\n" + EHLO_ALL + b"220 go\r\n" +
                                   EHLO_ALL + b"235 2.7.0 ok\r\n" + three),
        "auth_login_clear": client_input(0, 4 | 8, body, b"220 mx\r\n250-mx\r\n250 AUTH LOGIN\r\n"
                                         b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
                                         b"235 2.7.0 ok\r\n" + three),
        "auth_refused": client_input(0, 4 | 8, body, b"220 mx\r\n" + EHLO_ALL +
                                     b"535 5.7.8 bad credentials\r\n221 bye\r\n"),
        "late_send_timeout": client_input(32 | 64, 0, body, b"220 mx\r\n" + EHLO_ALL + TX_OK),
        "bad_replies": client_input(0, 0, body, b"220 mx\r\n250-x\r\n251 y\r\n"),
        "bare_lf": client_input(2, 0, body, b"220 mx\n" + EHLO_ALL.replace(b"\r\n", b"\n") +
                                three.replace(b"\r\n", b"\n")),
    }


TARGETS = {
    "fuzz_smtp_addr": smtp_addr,
    "fuzz_smtp_session": smtp_session,
    "fuzz_smtp_client": smtp_client,
}


def main():
    names = sys.argv[1:] or sorted(TARGETS)
    for name in names:
        d = os.path.join(CORPUS, name)
        os.makedirs(d, exist_ok=True)
        seeds = TARGETS[name]()
        for k, v in sorted(seeds.items()):
            with open(os.path.join(d, k), "wb") as f:
                f.write(v)
        print("%s: %d seeds" % (name, len(seeds)))


if __name__ == "__main__":
    main()
