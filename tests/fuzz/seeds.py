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
            b"BDAT 12\r\nSubject: x\r\nBDAT 8 LAST\r\n\r\nbody\r\nQUIT\r\n", (13, 64)),
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
        "many_rcpts": b"\x03" + chunks(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n" +
            b"".join(b"RCPT TO:<u%d@r.test>\r\n" % i for i in range(3)) +
            b"RCPT TO:<u1@r.test>\r\nRCPT TO:<postmaster>\r\nDATA\r\n" +
            b"Received: x\r\n" * 3 + BODY),
        # found by fuzzing: NOTIFY without a value (NULL + 0 in parse_notify)
        "regress_notify_no_value": b"\x02" + chunks(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test> NOTIFY\r\n"
            b"RCPT TO:<c@d.test> ORCPT\r\nQUIT\r\n"),
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
TX_OK = [b"250 2.1.0 ok\r\n", b"250 2.1.5 ok\r\n", b"250 2.1.5 ok\r\n", b"250 2.1.5 ok\r\n",
         b"354 go ahead\r\n", b"250 2.0.0 queued as X\r\n"]
THREE = TX_OK * 3 + [b"221 2.0.0 bye\r\n"]


def client_input(opt, opt2, body, replies, sizes=(64,)):
    """replies: the server's replies, each in reads of its own (a real
    server answers what it was sent; a reply read before the command it
    answers is a protocol error, and what follows a 220 to STARTTLS in
    the same read is dropped, RFC 3207 5)."""
    return (bytes([opt, opt2, len(body)]) + body +
            b"".join(chunks(r, sizes) for r in replies))


def smtp_client():
    body = b"Subject: x\r\n\r\nbody\r\n.line\r\n"
    hello = [b"220 mx.test ESMTP\r\n", EHLO_ALL]
    tls = hello + [b"220 2.0.0 go ahead\r\n", EHLO_ALL]
    return {
        "three_tx": client_input(0, 0, body, hello + THREE),
        "three_tx_split": client_input(1, 0, body, hello + THREE, (1, 5, 17)),
        "multiline": client_input(0, 0, body, [
            b"220-mx.test\r\n220-second\r\n220 third\r\n", EHLO_ALL,
            b"250-2.1.0 a\r\n250 2.1.0 b\r\n", b"550-5.1.1 no\r\n550 5.1.1 such user\r\n",
            b"452 4.5.3 too many\r\n", b"250 2.1.5 ok\r\n", b"354 go\r\n",
            b"250-2.0.0 ok\r\n250-2.0.0 second line\r\n250 2.0.0 queued\r\n",
            b"421 4.3.2 bye\r\n"]),
        "enhanced_mismatch": client_input(0, 0, body, hello + [
            b"250 2.1.0 ok\r\n", b"250-2.1.5 a\r\n250-2.1.6 b\r\n250 x\r\n",
            b"451 5.1.5 class differs\r\n", b"550 5.1.1234 too long\r\n",
            b"354 go\r\n", b"250 2.0.0\r\n", b"221 bye\r\n"]),
        "helo_fallback": client_input(0, 0, body, [b"220 old.test\r\n", b"500 what\r\n",
                                                   b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n",
                                                   b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
                                                   b"250 ok\r\n"]),
        "greeting_554": client_input(0, 0, body, [b"554 5.7.1 no service\r\n"]),
        "rcpt_refused_rset": client_input(0, 0, body, hello + [
            b"250 ok\r\n", b"550 5.1.1 no\r\n", b"550 5.1.1 no\r\n", b"550 5.1.1 no\r\n",
            b"554 5.5.1 no valid rcpts\r\n", b"250 2.0.0 reset\r\n"] + THREE),
        "dsn_utf8": client_input(4 | 8 | 16, 0, "Subject: \u00e9\r\n\r\n\u00e9\r\n".encode(),
                                 hello + THREE),
        "no_ext_8bit": client_input(8, 0, b"\xe9\r\n", [b"220 mx\r\n", b"250 mx\r\n"] + THREE),
        "starttls_may": client_input(0, 1, body, tls + THREE),
        "starttls_must_refused": client_input(0, 2, body, hello + [b"454 4.7.0 no tls\r\n"]),
        "starttls_must_fails": client_input(0, 2 | 16, body, hello + [b"220 go ahead\r\n"]),
        "auth_plain": client_input(0, 1 | 4, body, tls + [b"235 2.7.0 ok\r\n"] + THREE),
        "auth_eq_form": client_input(0, 2 | 4, body, hello[:1] + [
            b"250-mx\r\n250-STARTTLS\r\n250 AUTH=LOGIN\r\n", b"220 go\r\n",
            b"250-mx\r\n250-AUTH=LOGIN\r\n250 SIZE 10\r\n", b"334 VXNlcm5hbWU6\r\n",
            b"334 UGFzc3dvcmQ6\r\n", b"454 4.7.0 try later\r\n"]),
        "auth_login_clear": client_input(0, 4 | 8, body, [
            b"220 mx\r\n", b"250-mx\r\n250 AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n",
            b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 ok\r\n"] + THREE),
        "auth_refused": client_input(0, 4 | 8, body, hello + [
            b"535 5.7.8 bad credentials\r\n", b"221 bye\r\n"]),
        "auth_clear_refused": client_input(0, 4, body, hello + THREE),
        "late_send_timeout": client_input(32 | 64, 0, body, hello + TX_OK),
        "bad_replies": client_input(0, 0, body, [b"220 mx\r\n", b"250-x\r\n251 y\r\n"]),
        "bare_lf": client_input(2, 0, body, [r.replace(b"\r\n", b"\n") for r in hello + THREE]),
        "size_limit": client_input(0, 0, body * 3, [b"220 mx\r\n",
                                                    b"250-mx\r\n250 SIZE 20\r\n"] + THREE),
    }


# ---------------------------------------------------------------------------
# fuzz_envelope: the envelope text (docs/spool-format.md)

ENV_FULL = ("version 1\nid 0123456789abcdef\narrival 1795953882\n"
            "sender alice@example.org\nhelo client.example.org\nclient 192.0.2.1\n"
            "protocol ESMTPSA\nbody 8BITMIME\nsmtputf8 1\nret HDRS\nenvid QQ+2Bxyz\n"
            "size 4096\nrcpt - - bob@localhost\n"
            "rcpt SUCCESS,FAILURE,DELAY rfc822;carol+40example.test carol@example.test\n"
            "rcpt NEVER - \"d a\"@example.test\n"
            "rcpt - utf-8;\u00e9\\x{E9} \u00e9@\u4f8b\u3048.test\n").encode()
ENV_MIN = b"version 1\narrival 0\nsender \nrcpt - - postmaster\n"


def envelope():
    return {
        "full": ENV_FULL,
        "minimal_null_sender": ENV_MIN,
        "reordered": b"version 1\nrcpt - - a@b.test\nsize 1\nsender x@y.test\n"
                     b"arrival 1700000000\nret FULL\nbody 7BIT\n",
        "ipc_begin": b"version 1\narrival 1795953882\nsender a@b.test\nhelo [192.0.2.1]\n"
                     b"client ::1\nprotocol ESMTP\nrcpt DELAY - a@localhost\n"
                     b"rcpt - - b@localhost\n",
        "no_final_newline": b"version 1\narrival 1\nsender a@b\nrcpt - - c@d",
        "duplicate": b"version 1\narrival 1\narrival 2\nsender a@b\nrcpt - - c@d\n",
        "bad_utf8": b"version 1\narrival 1\nsender \xc0\xaf@b\nrcpt - - c@d\n",
        "version2": b"version 2\narrival 1\nsender a@b\nrcpt - - c@d\n",
    }


# ---------------------------------------------------------------------------
# fuzz_spool_journal: a whole queue file with id 0123456789abcdef

def queue_file(env, msg, journal):
    return b"tern-queue 1 %020d\n" % len(msg) + env + b"\n" + msg + journal


def spool_journal():
    msg = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n"
    env3 = ENV_FULL
    env1 = (b"version 1\nid 0123456789abcdef\narrival 1795953882\nsender \n"
            b"rcpt - - postmaster@localhost\n")
    return {
        "no_journal": queue_file(env3, msg, b""),
        "delivered_all": queue_file(env3, msg, b"A 0 1795953890 l -\nD 0\n"
                                    b"A 1 1795953891 d mx.example.test\nD 1\nR 1\n"
                                    b"A 2 1795953892 s mx2.test\nD 2\n"),
        "deferred_then_failed": queue_file(env3, msg,
                                           b"A 0 1795953890 s mx.test\n"
                                           b"T 0 1795954000 1 451 4.3.0 try later\n"
                                           b"T 0 1795955000 2 451 4.3.0 still\nW 0\n"
                                           b"A 0 1795960000 - -\n"
                                           b"F 0 550 5.4.7 delivery time expired\nR 0\n"
                                           b"T 1 1795954000 1 421 4.4.2 timeout\nD 1\n"
                                           b"F 2 550 5.1.1 no such user\nD 2\n"),
        "held": queue_file(env1, msg, b"H 1795953900\nU 1795953999\nH 1795954000\n"),
        "torn": queue_file(env1, msg, b"T 0 1795954000 1 451 4.3.0 x\nD 0"),
        "malformed_records": queue_file(env3, msg,
                                        b"X 0\nD 9\nD\nT 0 x 1 r\nA 0 1 q x\n"
                                        b"A 1 12 s \nF 1\nW 1 2\n\nD 00001\n"),
        "empty_message": queue_file(env1, b"", b"D 0\n"),
        "short_file": b"tern-queue 1 00000000000000099999\n" + env1 + b"\nx",
        "bad_head": b"tern-queue 2 00000000000000000000\n" + env1 + b"\n",
    }


# ---------------------------------------------------------------------------
# fuzz_queue_control: mode byte (0 request, 1 JSON string, 2/3 answer with
# the verb index in the next byte: 0 list 1 show 2 flush 3 delete 4 hold
# 5 release)

LIST_ANSWER = (b'{"ok":true,"now":1795953900,"count":2,"messages":[{"id":"0123456789abcdef",'
               b'"arrival":1795953882,"size_kib":4,"recipients":3,"pending":1,'
               b'"sender":"alice@example.org","state":"deferred","next_attempt":1795954000},'
               b'{"id":"0123456789abcdf0","arrival":1795953883,"size_kib":20480,'
               b'"recipients":1,"pending":1,"sender":null,"state":"held","next_attempt":null}]}\n')
SHOW_ANSWER = ('{"ok":true,"message":{"id":"0123456789abcdef","arrival":1795953882,'
               '"size":4096,"sender":"","helo":"c.test","client":"192.0.2.1",'
               '"protocol":"ESMTP","body":"8BITMIME","smtputf8":true,"ret":"HDRS",'
               '"envid":"QQ+2Bx","held_since":null,"recipients":[{"index":0,'
               '"address":"b@localhost","orcpt":null,"state":"deferred","attempts":2,'
               '"next_attempt":1795954000,"reply":"451 4.3.0 \\u00e9\\"x\\\\ \\u0001"},'
               '{"index":1,"address":"\u00e9@\u4f8b.test","orcpt":"rfc822;x","state":"failed",'
               '"attempts":0,"next_attempt":null,"reply":"550 5.1.1 no"}],'
               '"state":"active","next_attempt":0,"pending":1}}\n').encode()


def queue_control():
    return {
        "req_list": b"\x00list",
        "req_show": b"\x00show 0123456789ABCDEF",
        "req_flush_id": b"\x00flush 0123456789abcdef\r",
        "req_flush": b"\x00flush",
        "req_delete": b"\x00delete 0123456789abcdef",
        "req_hold_bad": b"\x00hold 0123",
        "req_release_ctl": b"\x00release \x01",
        "str_ascii": b'\x01a "quoted" \\ back\x7f',
        "str_utf8": "\x01\u00e9\u4f8b\U0001f600 \x01\x1f".encode(),
        "str_invalid": b"\x01\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xe9",
        "ans_list": b"\x02\x00" + LIST_ANSWER,
        "ans_show": b"\x02\x01" + SHOW_ANSWER,
        "ans_flush": b'\x02\x02{"ok":true,"flushed":3}\n',
        "ans_delete": b'\x02\x03{"ok":true,"id":"0123456789abcdef","action":"deleted"}\n',
        "ans_error": b'\x02\x04{"ok":false,"error":"not found","id":"0123456789abcdef"}\n',
        "ans_json": b"\x03\x01" + SHOW_ANSWER,
        "ans_numbers": b'\x02\x00{"ok":true,"messages":[{"arrival":1e300,"size_kib":-5,'
                       b'"recipients":2.5,"pending":-1e10,"next_attempt":1E3}]}',
        "ans_nested": b'\x02\x01{"ok":true,"message":{"recipients":[[[[{}]]],true,false,null]}}',
    }


# ---------------------------------------------------------------------------
# fuzz_sendmail: a mode byte (mode = byte % 5; bits 0x20 ignore dots, 0x40
# extract -t, 0x80 qualify bare names), then the mode's text

def sendmail_mode(mode, opts=0):
    return bytes([next(b for b in range(256) if b % 5 == mode and b & 0xe0 == opts)])


def sendmail():
    msg = (b"From mbox line\nFrom: Me <me@example.test>\nTo: a@example.test,\n"
           b" \"B b\" <b@example.test>, (comment) c\r\nCc: group: d@example.test,"
           b" e@example.test;\nBcc: hidden@example.test\nResent-Bcc: x@y.test\n"
           b"Subject: hi\n\tfolded\n\nbody\n.dots\n.\nafter\n")
    m = sendmail_mode
    return {
        "args_typical": m(0) + b"-t\0-i\0-f\0sender@example.test\0-F\0Full Name\0"
                        b"--\0a@example.test\0-b",
        "args_options": m(0) + b"-oi\0-oem\0-bm\0-Cfile\0-N\0never\0-v\0-em\0-O\0x=y\0"
                        b"a@b\0-x",
        "args_missing": m(0) + b"-f",
        "args_mode": m(0) + b"-bs",
        "addrs_mixed": m(1) + b"A <a@example.test>, \"q\\\" x\" <b@example.test>,"
                       b" c@example.test (C), group: d@x.test, e@[192.0.2.1];,"
                       b" <@route.test,@r2.test:f@example.test>",
        "addrs_bare": m(1, 0x80) + b"root, postmaster, A@EXAMPLE.TEST, a@example.test",
        "addrs_utf8": m(1) + "J\u00f6rg <j\u00f6rg@b\u00fccher.example>".encode(),
        "addrs_bad": m(1) + b"a b c, <unterminated",
        "msg_extract": m(2, 0x40 | 0x80) + msg,
        "msg_plain": m(2) + msg,
        "msg_ignore_dots": m(2, 0x20) + msg.replace(b"\n", b"\r\n"),
        "msg_bare_cr": m(2, 0x40) + b"To: a@b.test\rBcc: c@d.test\r\rbody\rx",
        "msg_no_header": m(2) + b"just a body line\n\nmore\n",
        "name_atoms": m(3) + b"Jane Doe",
        "name_quoted": m(3) + b"Doe, Jane \"JD\" \\",
        "name_utf8": m(3) + ("J\u00f6rg " * 20).encode() + b"\x01\n",
        "config": m(4) + b"# tern\nspool \"/var/spool/tern\"\nhostname mx.example.test\n"
                  b"domain example.test {\n submit_socket /no\n}\nsubmit_socket "
                  b"\"/run/tern/submit.sock\" # x\n",
        "config_unterminated": m(4) + b"spool \"/var\\\"",
    }


# ---------------------------------------------------------------------------
# fuzz_smtp_auth: options byte (0x80: SASL codecs on the rest; else bits
# 0-1 listener 0 submission/1 auth in clear/2 TLS only, 0x04 relay_ok,
# 0x08 throttled, 0x10 slow verifier, 0x20 STARTTLS offered, 0x40 queue
# fails), then the client's octets in reads

def b64(raw):
    import base64
    return base64.b64encode(raw)


def smtp_auth():
    plain_ok = b64(b"\0alice@example.test\0secret")
    sub_msg = (b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n"
               b"From: Alice <alice@example.test>\r\nTo: x@remote.test\r\n"
               b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    return {
        "plain_ir_submit": b"\x00" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok +
                                            b"\r\n" + sub_msg, (64, 11)),
        "plain_continuation": b"\x01" + chunks(b"EHLO c.test\r\nAUTH PLAIN\r\n" + plain_ok +
                                               b"\r\n" + sub_msg),
        "login": b"\x11" + chunks(b"EHLO c.test\r\nAUTH LOGIN\r\n" +
                                  b64(b"alice@example.test") + b"\r\n" + b64(b"secret") +
                                  b"\r\n" + sub_msg),
        "login_ir": b"\x01" + chunks(b"EHLO c.test\r\nAUTH LOGIN " + b64(b"nobody") +
                                     b"\r\n" + b64(b"secret") + b"\r\nMAIL FROM:<x@y.test>\r\n"),
        "failures": b"\x01" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + b64(b"\0alice\0wrong") +
                                     b"\r\nAUTH PLAIN " + b64(b"\0alice\0temp") + b"\r\n"
                                     b"AUTH LOGIN\r\n*\r\nAUTH PLAIN =\r\nAUTH PLAIN\r\n\r\n"
                                     b"AUTH PLAIN " + b64(b"bob\0alice\0secret") + b"\r\n"
                                     b"AUTH PLAIN " + b64(b"\0alice\0lock") + b"\r\nNOOP\r\n"),
        "bad_base64": b"\x01" + chunks(b"EHLO c.test\r\nAUTH PLAIN YR==\r\nAUTH PLAIN =AAA\r\n"
                                       b"AUTH LOGIN A\r\nAUTH CRAM-MD5\r\nAUTH\r\n"
                                       b"AUTH PLAIN a b\r\nHELO c\r\nAUTH PLAIN\r\n"),
        # the reads end with STARTTLS: what follows it in the same read is
        # dropped (RFC 3207 5)
        "starttls_then_auth": b"\x22" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok +
                                               b"\r\nSTARTTLS\r\n") +
                              chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok + b"\r\n" +
                                     sub_msg),
        "wrong_from_header": b"\x00" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok +
                                              b"\r\nMAIL FROM:<alice@alias.test>\r\n"
                                              b"RCPT TO:<x@r.test>\r\nDATA\r\n"
                                              b"From: bob@x.test, alice@example.test\r\n"
                                              b"Sender: alice@example.test\r\n\r\nx\r\n.\r\n"
                                              b"RSET\r\nAUTH PLAIN " + plain_ok + b"\r\n"),
        "throttled": b"\x09" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok + b"\r\n"),
        "required_no_auth": b"\x04" + chunks(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n"
                                             b"AUTH PLAIN " + plain_ok + b"\r\n" + sub_msg),
        "wrong_from": b"\x40" + chunks(b"EHLO c.test\r\nAUTH PLAIN " + plain_ok + b"\r\n"
                                       b"MAIL FROM:<bob@example.test>\r\nMAIL FROM:<>\r\n"
                                       b"RCPT TO:<x@r.test>\r\nDATA\r\nFrom: bob@x.test\r\n"
                                       b"\r\nx\r\n.\r\n"),
        "long_response": b"\x01" + chunks(b"EHLO c\r\nAUTH PLAIN\r\n" + b"QUFB" * 3100 +
                                          b"\r\nNOOP\r\n"),
        "sasl_plain": b"\x80" + plain_ok,
        "sasl_authzid": b"\x80" + b64(b"alice\0alice\0pw"),
        "sasl_pad1": b"\x80QUI=",
        "sasl_noncanonical": b"\x80YR==",
        "sasl_bad": b"\x80A=AA",
    }


TARGETS = {
    "fuzz_smtp_addr": smtp_addr,
    "fuzz_smtp_session": smtp_session,
    "fuzz_smtp_client": smtp_client,
    "fuzz_envelope": envelope,
    "fuzz_spool_journal": spool_journal,
    "fuzz_queue_control": queue_control,
    "fuzz_sendmail": sendmail,
    "fuzz_smtp_auth": smtp_auth,
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
