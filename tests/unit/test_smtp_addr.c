/*
 * test_smtp_addr.c - unit tests for smtp_addr.c: RFC 5321 paths and
 * mailboxes, RFC 6531 UTF-8, RFC 3461 xtext, and the isemail test set.
 *
 * The tables hold named cases with want fields; every case is checked and
 * every mismatch is printed with its name before the test fails, so one
 * run shows all the breakage.
 */
#include "unit.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mail/smtp_addr.h"

/* Building blocks for the length boundaries. */
#define S10 "abcdefghij"
#define S50 S10 S10 S10 S10 S10
#define S58 S50 "abcdefgh"
#define S59 S50 "abcdefghi"
#define S60 S50 S10
#define S61 S60 "a"
#define S62 S60 "ab"
#define S63 S60 "abc"
#define S64 S60 "abcd"
#define S65 S60 "abcde"
/* Domains of exactly 186, 187, 189, 190, 254, 255 and 256 octets. */
#define D186 S63 "." S63 "." S58
#define D187 S63 "." S63 "." S59
#define D189 S63 "." S63 "." S61
#define D190 S63 "." S63 "." S62
#define D254 S63 "." S63 "." S63 "." S62
#define D255 S63 "." S63 "." S63 "." S63
#define D256 D254 ".b"
/* 64 and 65 octets of quoted local part, quotes included. */
#define Q64 "\"" S62 "\""
#define Q65 "\"" S63 "\""
/* "é" is two octets: 32 of them fill a local part, 33 overflow it. */
#define E8 "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"
#define E32 E8 E8 E8 E8
#define E33 E32 "\xC3\xA9"

/* Bits of struct path_case.want_bits, one per bool in struct smtp_addr. */
enum {
	W_NULL = 1 << 0,
	W_POSTMASTER = 1 << 1,
	W_QUOTED = 1 << 2,
	W_LITERAL = 1 << 3,
	W_UTF8 = 1 << 4,
	W_ROUTE = 1 << 5,
};

#define F_UTF8 SMTP_ADDR_UTF8
#define F_NULL SMTP_ADDR_NULL_OK
#define F_PM SMTP_ADDR_POSTMASTER_OK
#define F_BARE SMTP_ADDR_NO_BRACKETS_OK
#define F_ALL (F_UTF8 | F_NULL | F_PM | F_BARE)

#define OK SMTP_ADDR_OK
#define E_SYNTAX SMTP_ADDR_ERR_SYNTAX
#define E_LOCAL SMTP_ADDR_ERR_LOCAL_TOO_LONG
#define E_DOMAIN SMTP_ADDR_ERR_DOMAIN_TOO_LONG
#define E_PATH SMTP_ADDR_ERR_PATH_TOO_LONG
#define E_8BIT SMTP_ADDR_ERR_UTF8_NOT_ALLOWED
#define E_BADUTF8 SMTP_ADDR_ERR_BAD_UTF8
#define E_NULL SMTP_ADDR_ERR_NULL_NOT_ALLOWED

/* The want fields of a case that expects an error. */
#define NO_WANT 0, NULL, NULL, NULL, 0
#define MNO_WANT NULL, NULL, NULL, 0

struct path_case {
	const char *name;
	const char *in;
	size_t in_len;          /* 0: strlen(in) (for inputs holding NUL) */
	unsigned flags;
	enum smtp_addr_error want;
	/* Checked only when want is OK; NULL local/domain are not checked. */
	size_t want_consumed;   /* 0: all of the input */
	const char *want_local;
	const char *want_value; /* NULL: same as want_local */
	const char *want_domain;
	unsigned want_bits;
};

static const struct path_case path_cases[] = {
	/* Plain paths. */
	{ "simple", "<user@example.com>", 0, 0, OK, 0,
	  "user", NULL, "example.com", 0 },
	{ "dot-string", "<first.last@sub.example.org>", 0, 0, OK, 0,
	  "first.last", NULL, "sub.example.org", 0 },
	{ "all atext", "<!#$%&'*+-/=?^_`{|}~@example.com>", 0, 0, OK, 0,
	  "!#$%&'*+-/=?^_`{|}~", NULL, "example.com", 0 },
	{ "digits", "<123@123.com>", 0, 0, OK, 0, "123", NULL, "123.com", 0 },
	{ "single-label domain", "<root@localhost>", 0, 0, OK, 0,
	  "root", NULL, "localhost", 0 },
	{ "numeric labels", "<a@255.255.255.255>", 0, 0, OK, 0,
	  "a", NULL, "255.255.255.255", 0 },
	{ "double hyphen label", "<a@c--n.com>", 0, 0, OK, 0,
	  "a", NULL, "c--n.com", 0 },
	{ "case kept", "<User@Example.COM>", 0, 0, OK, 0,
	  "User", NULL, "Example.COM", 0 },
	{ "every flag, plain path", "<a@b>", 0, F_ALL, OK, 0,
	  "a", NULL, "b", 0 },

	/* consumed: the caller parses ESMTP parameters after the path. */
	{ "params after path", "<a@b> SIZE=10", 0, 0, OK, 5,
	  "a", NULL, "b", 0 },
	{ "params after null path", "<> SIZE=10 BODY=8BITMIME", 0, F_NULL, OK,
	  2, "", NULL, "", W_NULL },
	{ "junk after > left to caller", "<a@b>x", 0, 0, OK, 5,
	  "a", NULL, "b", 0 },
	{ "params after quoted", "<\"a b\"@c> NOTIFY=NEVER", 0, 0, OK, 9,
	  "\"a b\"", "a b", "c", W_QUOTED },

	/* Quoted local parts. */
	{ "quoted", "<\"john doe\"@example.com>", 0, 0, OK, 0,
	  "\"john doe\"", "john doe", "example.com", W_QUOTED },
	{ "quoted pairs", "<\"a\\\"b\\\\c\\d\"@x>", 0, 0, OK, 0,
	  "\"a\\\"b\\\\c\\d\"", "a\"b\\cd", "x", W_QUOTED },
	{ "quoted empty", "<\"\"@x>", 0, 0, OK, 0, "\"\"", "", "x", W_QUOTED },
	{ "quoted specials", "<\"<>[]:;,@ ()\"@x>", 0, 0, OK, 0,
	  "\"<>[]:;,@ ()\"", "<>[]:;,@ ()", "x", W_QUOTED },
	{ "quoted escaped space", "<\"a\\ b\"@x>", 0, 0, OK, 0,
	  "\"a\\ b\"", "a b", "x", W_QUOTED },
	{ "quoted plain word", "<\"user\"@x>", 0, 0, OK, 0,
	  "\"user\"", "user", "x", W_QUOTED },

	/* Hostile relay forms are just local parts (the caller refuses). */
	{ "percent hack", "<user%other@local>", 0, 0, OK, 0,
	  "user%other", NULL, "local", 0 },
	{ "bang path", "<other!user@local>", 0, 0, OK, 0,
	  "other!user", NULL, "local", 0 },
	{ "quoted at", "<\"user@other\"@local>", 0, 0, OK, 0,
	  "\"user@other\"", "user@other", "local", W_QUOTED },
	{ "quoted at, escaped", "<\"user\\@other\"@local>", 0, 0, OK, 0,
	  "\"user\\@other\"", "user@other", "local", W_QUOTED },
	{ "double at", "<user@other@local>", 0, 0, E_SYNTAX, NO_WANT },
	{ "double at, bare", "user@other@local", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "escaped at outside quotes", "<user\\@other@local>", 0, 0, E_SYNTAX, NO_WANT },

	/* Source routes: accepted and ignored (RFC 5321 4.1.2, C). */
	{ "route", "<@a,@b:user@c>", 0, 0, OK, 0,
	  "user", NULL, "c", W_ROUTE },
	{ "route one hop", "<@relay.example:user@c.example>", 0, 0, OK, 0,
	  "user", NULL, "c.example", W_ROUTE },
	{ "route to literal", "<@a:user@[1.2.3.4]>", 0, 0, OK, 0,
	  "user", NULL, "[1.2.3.4]", W_ROUTE | W_LITERAL },
	{ "route in null-ok path", "<@a:u@b> SIZE=1", 0, F_NULL, OK, 8,
	  "u", NULL, "b", W_ROUTE },
	{ "route hop without @", "<@a,b:user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route empty hop", "<@:user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route empty mailbox", "<@a:>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route no colon", "<@a user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route semicolon", "<@a;user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route trailing comma", "<@a,:user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route literal hop", "<@[1.2.3.4]:user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route bad hop", "<@-a:user@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "domain only", "<@example.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "route to postmaster", "<@a:Postmaster>", 0, F_PM, E_SYNTAX, NO_WANT },
	{ "route, bare", "@a:user@c", 0, F_BARE, E_SYNTAX, NO_WANT },

	/* Null path. */
	{ "null refused", "<>", 0, 0, E_NULL, NO_WANT },
	{ "null refused, other flags", "<>", 0, F_UTF8 | F_PM | F_BARE,
	  E_NULL, NO_WANT },
	{ "null accepted", "<>", 0, F_NULL, OK, 2, "", NULL, "", W_NULL },
	{ "null with space", "< >", 0, F_NULL, E_SYNTAX, NO_WANT },
	{ "empty input", "", 0, F_ALL, E_SYNTAX, NO_WANT },
	{ "only <", "<", 0, F_ALL, E_SYNTAX, NO_WANT },

	/* Postmaster without a domain (RFC 5321 4.1.1.3, 4.5.1). */
	{ "postmaster refused", "<Postmaster>", 0, 0, E_SYNTAX, NO_WANT },
	{ "postmaster", "<Postmaster>", 0, F_PM, OK, 0,
	  "Postmaster", NULL, "", W_POSTMASTER },
	{ "postmaster any case", "<pOsTmAsTeR> x", 0, F_PM, OK, 12,
	  "pOsTmAsTeR", NULL, "", W_POSTMASTER },
	{ "postmaster bare", "postmaster", 0, F_PM | F_BARE, OK, 0,
	  "postmaster", NULL, "", W_POSTMASTER },
	{ "postmaster with domain", "<Postmaster@example.com>", 0, 0, OK, 0,
	  "Postmaster", NULL, "example.com", 0 },
	{ "postmaster quoted", "<\"Postmaster\">", 0, F_PM, E_SYNTAX, NO_WANT },
	{ "postmaster suffix", "<Postmaster2>", 0, F_PM, E_SYNTAX, NO_WANT },
	{ "postmaster dotted", "<post.master>", 0, F_PM, E_SYNTAX, NO_WANT },
	{ "no domain", "<user>", 0, F_ALL, E_SYNTAX, NO_WANT },
	{ "empty domain", "<user@>", 0, 0, E_SYNTAX, NO_WANT },
	{ "empty local", "<@>", 0, 0, E_SYNTAX, NO_WANT },
	{ "empty local with domain", "<@b.c:>", 0, 0, E_SYNTAX, NO_WANT },

	/* Brackets. */
	{ "bare refused", "user@example.com", 0, 0, E_SYNTAX, NO_WANT },
	{ "no >", "<user@example.com", 0, 0, E_SYNTAX, NO_WANT },
	{ "no >, bare ok", "<user@example.com", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "no <", "user@example.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "no <, bare ok", "user@example.com>", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "bare", "user@example.com", 0, F_BARE, OK, 0,
	  "user", NULL, "example.com", 0 },
	{ "bare with params", "user@example.com SIZE=10", 0, F_BARE, OK, 16,
	  "user", NULL, "example.com", 0 },
	{ "bare quoted with space", "\"a b\"@c SIZE=1", 0, F_BARE, OK, 7,
	  "\"a b\"", "a b", "c", W_QUOTED },
	{ "bare followed by tab", "a@b\tSIZE=1", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "bare followed by CR", "a@b\r\n", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "bare postmaster without flag", "postmaster", 0, F_BARE, E_SYNTAX, NO_WANT },
	{ "double brackets", "<<a@b>>", 0, F_ALL, E_SYNTAX, NO_WANT },
	{ "space before <", " <a@b>", 0, 0, E_SYNTAX, NO_WANT },
	{ "space inside <", "< a@b>", 0, 0, E_SYNTAX, NO_WANT },
	{ "space before >", "<a@b >", 0, 0, E_SYNTAX, NO_WANT },

	/* Local part syntax. */
	{ "leading dot", "<.a@b>", 0, 0, E_SYNTAX, NO_WANT },
	{ "trailing dot", "<a.@b>", 0, 0, E_SYNTAX, NO_WANT },
	{ "double dot", "<a..b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "space", "<a b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "comment", "<(c)a@b>", 0, 0, E_SYNTAX, NO_WANT },
	{ "comma", "<a,b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "colon", "<a:b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "bracket in local", "<a[b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "atext after quoted", "<\"a\"b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "quoted after atext", "<a\"b\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "dotted quoted words", "<\"a\".\"b\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "quote inside quoted", "<\"\"\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "unterminated quote", "<\"abc@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "escaped closing quote", "<\"abc\\\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "backslash at end", "<\"a\\", 0, 0, E_SYNTAX, NO_WANT },
	{ "quote at end", "<\"", 0, 0, E_SYNTAX, NO_WANT },

	/* Control characters, NUL, CR, LF, DEL: RFC 5321 4.1.2. */
	{ "control in local", "<a\x01" "b@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "NUL in local", "<a\0b@c>", 7, 0, E_SYNTAX, NO_WANT },
	{ "NUL in domain", "<a@b\0c>", 7, 0, E_SYNTAX, NO_WANT },
	{ "NUL in quoted", "<\"a\0b\"@c>", 9, 0, E_SYNTAX, NO_WANT },
	{ "NUL after path is not read", "<a@b>\0", 6, 0, OK, 5,
	  "a", NULL, "b", 0 },
	{ "CR in local", "<a\rb@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "LF in domain", "<a@b\nc>", 0, 0, E_SYNTAX, NO_WANT },
	{ "CRLF before >", "<a@b\r\n>", 0, 0, E_SYNTAX, NO_WANT },
	{ "DEL in local", "<a\x7f@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "DEL in quoted", "<\"a\x7f\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "TAB in quoted", "<\"a\tb\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "escaped TAB", "<\"a\\\tb\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "escaped NUL", "<\"a\\\0\"@c>", 9, 0, E_SYNTAX, NO_WANT },
	{ "escaped LF", "<\"a\\\n\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "escaped US", "<\"a\\\x1f\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "escaped DEL", "<\"a\\\x7f\"@c>", 0, 0, E_SYNTAX, NO_WANT },
	{ "control in literal", "<a@[1.2.3.4\x01]>", 0, 0, E_SYNTAX, NO_WANT },

	/* Domains. */
	{ "leading hyphen", "<a@-b.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "trailing hyphen", "<a@b-.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "trailing hyphen, last label", "<a@b.com->", 0, 0, E_SYNTAX, NO_WANT },
	{ "hyphen label", "<a@->", 0, 0, E_SYNTAX, NO_WANT },
	{ "double dot domain", "<a@b..com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "leading dot domain", "<a@.b.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "trailing dot domain", "<a@b.com.>", 0, 0, E_SYNTAX, NO_WANT },
	{ "underscore", "<a@b_c.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "slash", "<a@b/c.com>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal after label", "<a@b[1.2.3.4]>", 0, 0, E_SYNTAX, NO_WANT },

	/* Address literals (RFC 5321 4.1.3). */
	{ "v4", "<a@[1.2.3.4]>", 0, 0, OK, 0, "a", NULL, "[1.2.3.4]",
	  W_LITERAL },
	{ "v4 max", "<a@[255.255.255.255]>", 0, 0, OK, 0,
	  "a", NULL, "[255.255.255.255]", W_LITERAL },
	{ "v4 zero", "<a@[0.0.0.0]>", 0, 0, OK, 0, "a", NULL, "[0.0.0.0]",
	  W_LITERAL },
	{ "v4 leading zero (Snum = 1*3DIGIT)", "<a@[010.001.1.00]>", 0, 0,
	  OK, 0, "a", NULL, "[010.001.1.00]", W_LITERAL },
	{ "v4 256", "<a@[256.1.1.1]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 999", "<a@[1.1.1.999]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 four digits", "<a@[1.2.3.0004]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 three parts", "<a@[1.2.3]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 five parts", "<a@[1.2.3.4.5]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 empty part", "<a@[1..3.4]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 trailing dot", "<a@[1.2.3.4.]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v4 sign", "<a@[+1.2.3.4]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal unclosed", "<a@[1.2.3.4>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal unclosed at end", "<a@[1.2.3.4", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal empty", "<a@[]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal then junk", "<a@[1.2.3.4]x>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal nested", "<a@[[1.2.3.4]]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal with space", "<a@[RFC 5322 literal]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "literal without tag", "<a@[RFC-5322-domain-literal]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "literal backslash", "<a@[x:a\\]b]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 full", "<a@[IPv6:1111:2222:3333:4444:5555:6666:7777:8888]>", 0,
	  0, OK, 0, "a", NULL, "[IPv6:1111:2222:3333:4444:5555:6666:7777:8888]",
	  W_LITERAL },
	{ "v6 tag any case", "<a@[ipv6:1:2:3:4:5:6:7:aBcD]>", 0, 0, OK, 0,
	  "a", NULL, "[ipv6:1:2:3:4:5:6:7:aBcD]", W_LITERAL },
	{ "v6 all zero", "<a@[IPv6:::]>", 0, 0, OK, 0, "a", NULL,
	  "[IPv6:::]", W_LITERAL },
	{ "v6 loopback", "<a@[IPv6:::1]>", 0, 0, OK, 0, "a", NULL,
	  "[IPv6:::1]", W_LITERAL },
	{ "v6 trailing ::", "<a@[IPv6:fe80::]>", 0, 0, OK, 0, "a", NULL,
	  "[IPv6:fe80::]", W_LITERAL },
	{ "v6 comp 6 before", "<a@[IPv6:1:2:3:4:5:6::]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6 comp 6 after", "<a@[IPv6:::1:2:3:4:5:6]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6 comp 5+1", "<a@[IPv6:1:2:3:4:5::6]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6 comp 7 before", "<a@[IPv6:1:2:3:4:5:6:7::]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 comp 7 after", "<a@[IPv6:::1:2:3:4:5:6:7]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 comp 6+1 (:: for one group)", "<a@[IPv6:1:2:3:4:5:6::7]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "v6 comp 8 groups", "<a@[IPv6:1:2:3:4::5:6:7:8]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 two ::", "<a@[IPv6:1::2::3]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 :::", "<a@[IPv6:1:::2]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 leading single colon", "<a@[IPv6::1]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 trailing single colon", "<a@[IPv6:1::2:]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 full trailing colon", "<a@[IPv6:1:2:3:4:5:6:7:8:]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "v6 seven groups", "<a@[IPv6:1:2:3:4:5:6:7]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 nine groups", "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 five hex digits", "<a@[IPv6:12345::]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 bad hex", "<a@[IPv6:1:2:3:4:5:6:7:888G]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 empty", "<a@[IPv6:]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6 zone id", "<a@[IPv6:fe80::1%eth0]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6v4 full", "<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6v4 full 5 groups", "<a@[IPv6:1:2:3:4:5:1.2.3.4]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "v6v4 full 7 groups", "<a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "v6v4 comp", "<a@[IPv6:::1.2.3.4]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6v4 comp mapped", "<a@[IPv6:::ffff:1.2.3.4]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6v4 comp 4 before", "<a@[IPv6:1:2:3:4::1.2.3.4]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6v4 comp 3+1", "<a@[IPv6:1:2:3::4:1.2.3.4]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "v6v4 comp 5 before", "<a@[IPv6:1:2:3:4:5::1.2.3.4]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "v6v4 comp 4+1", "<a@[IPv6:1:2:3:4::5:1.2.3.4]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6v4 bad v4", "<a@[IPv6:::1.2.3.256]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6v4 v4 first", "<a@[IPv6:1.2.3.4::]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6v4 v4 only", "<a@[IPv6:1.2.3.4]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "v6v4 ::: before v4", "<a@[IPv6:1:2:3:4:::1.2.3.4]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "general", "<a@[x-tag:any.thing-here]>", 0, 0, OK, 0,
	  "a", NULL, "[x-tag:any.thing-here]", W_LITERAL },
	{ "general dcontent", "<a@[X400:c=us;a=_;p=x!~{}]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },
	{ "general empty content", "<a@[tag:]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "general empty tag", "<a@[:x]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "general tag hyphen end", "<a@[tag-:x]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "general tag with dot", "<a@[t.g:x]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "general with space", "<a@[tag:a b]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "untagged v6", "<a@[1111:2222:3333:4444:5555:6666:7777:8888]>", 0, 0,
	  E_SYNTAX, NO_WANT },
	{ "untagged v6 comp", "<a@[dead:beef::1]>", 0, 0, E_SYNTAX, NO_WANT },
	{ "general 5-digit tag", "<a@[12345:x]>", 0, 0, OK, 0,
	  "a", NULL, NULL, W_LITERAL },

	/* UTF-8 (RFC 6531 3.3). */
	{ "utf8 local refused", "<j\xC3\xB6rg@example.com>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 local", "<j\xC3\xB6rg@example.com>", 0, F_UTF8, OK, 0,
	  "j\xC3\xB6rg", NULL, "example.com", W_UTF8 },
	{ "utf8 domain refused", "<a@b\xC3\xBC" "cher.example>", 0, 0,
	  E_8BIT, NO_WANT },
	{ "utf8 domain", "<a@b\xC3\xBC" "cher.example>", 0, F_UTF8, OK, 0,
	  "a", NULL, "b\xC3\xBC" "cher.example", W_UTF8 },
	{ "utf8 whole label", "<a@\xE4\xBE\x8B\xE5\xAD\x90.\xE6\xB5\x8B>", 0,
	  F_UTF8, OK, 0, "a", NULL, NULL, W_UTF8 },
	/* label limits apply to the A-label (RFC 5890 2.3.2.1): 80 octets of
	 * UTF-8 make "xn--4ca..." of 46; 140 make 72, too long */
	{ "utf8 long U-label, short A-label", "<a@" "\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4" ".test>", 0, F_UTF8,
	  OK, 0, "a", NULL, NULL, W_UTF8 },
	{ "utf8 A-label too long", "<a@" "\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4\xC3\xA4" ".test>", 0, F_UTF8,
	  E_DOMAIN, NO_WANT },
	{ "utf8 not IDNA2008", "<a@\xE2\x98\x95.test>", 0, F_UTF8,
	  SMTP_ADDR_ERR_BAD_IDN, NO_WANT },
	{ "utf8 quoted refused", "<\"\xC3\xB6\"@x>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 quoted", "<\"\xC3\xB6 x\"@x>", 0, F_UTF8, OK, 0,
	  "\"\xC3\xB6 x\"", "\xC3\xB6 x", "x", W_UTF8 | W_QUOTED },
	{ "utf8 route refused", "<@\xC3\xA9:a@b>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 route", "<@\xC3\xA9:a@b>", 0, F_UTF8, OK, 0,
	  "a", NULL, "b", W_UTF8 | W_ROUTE },
	{ "utf8 4-byte", "<\xF0\x9F\x93\xAE@x>", 0, F_UTF8, OK, 0,
	  "\xF0\x9F\x93\xAE", NULL, "x", W_UTF8 },
	{ "utf8 U+10FFFF", "<\xF4\x8F\xBF\xBF@x>", 0, F_UTF8, OK, 0,
	  NULL, NULL, "x", W_UTF8 },
	{ "utf8 U+FFFF", "<\xEF\xBF\xBF@x>", 0, F_UTF8, OK, 0,
	  NULL, NULL, "x", W_UTF8 },
	/* C1 controls are controls: refused like ASCII ones */
	{ "utf8 U+0080", "<\xC2\x80@x>", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 U+009B CSI", "<a\xC2\x9B[2J@x>", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 U+00A0", "<\xC2\xA0@x>", 0, F_UTF8, OK, 0,
	  NULL, NULL, "x", W_UTF8 },
	{ "utf8 U+D7FF", "<\xED\x9F\xBF@x>", 0, F_UTF8, OK, 0,
	  NULL, NULL, "x", W_UTF8 },
	{ "no utf8 seen", "<a@b>", 0, F_UTF8, OK, 0, "a", NULL, "b", 0 },
	{ "utf8 bad byte refused first", "<\xFF@x>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 lone continuation", "<\x80@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 overlong 2", "<\xC0\xAF@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 overlong C1", "<\xC1\xBF@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 overlong 3", "<\xE0\x80\xAF@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 overlong 4", "<\xF0\x80\x80\xAF@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 surrogate", "<\xED\xA0\x80@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 low surrogate", "<\xED\xBF\xBF@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 above U+10FFFF", "<\xF4\x90\x80\x80@x>", 0, F_UTF8,
	  E_BADUTF8, NO_WANT },
	{ "utf8 F5", "<\xF5\x80\x80\x80@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 FE", "<\xFE@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 truncated by >", "<a@b\xC3>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 truncated 3", "<\xE2\x82@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 truncated at end", "<a\xE2\x82", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 bad continuation", "<\xE2\x28\xA1@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 in quoted, bad", "<\"\xC3\"@x>", 0, F_UTF8, E_BADUTF8, NO_WANT },
	{ "utf8 in quoted-pair", "<\"\\\xC3\xA9\"@x>", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 in quoted-pair refused", "<\"\\\xC3\xA9\"@x>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 in literal", "<a@[1.2.3.4\xC3\xA9]>", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 in literal refused", "<a@[1.2.3.4\xC3\xA9]>", 0, 0, E_8BIT, NO_WANT },
	{ "utf8 label leading hyphen", "<a@-\xC3\xA9>", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 label trailing hyphen", "<a@\xC3\xA9->", 0, F_UTF8, E_SYNTAX, NO_WANT },
	{ "utf8 NBSP is not space", "<a\xC2\xA0" "b@x>", 0, F_UTF8, OK, 0,
	  "a\xC2\xA0" "b", NULL, "x", W_UTF8 },
	{ "utf8 bare refused", "j\xC3\xB6rg@x", 0, F_BARE, E_8BIT, NO_WANT },
	{ "utf8 after mailbox, bare", "a@b\xC3\xA9", 0, F_BARE, E_8BIT, NO_WANT },

	/* RFC 5321 4.5.3.1 length limits, at the exact boundaries. */
	{ "local 64", "<" S64 "@b>", 0, 0, OK, 0, S64, NULL, "b", 0 },
	{ "local 65", "<" S65 "@b>", 0, 0, E_LOCAL, NO_WANT },
	{ "quoted local 64", "<" Q64 "@b>", 0, 0, OK, 0,
	  Q64, S62, "b", W_QUOTED },
	{ "quoted local 65", "<" Q65 "@b>", 0, 0, E_LOCAL, NO_WANT },
	{ "utf8 local 64 octets", "<" E32 "@b>", 0, F_UTF8, OK, 0,
	  E32, NULL, "b", W_UTF8 },
	{ "utf8 local 66 octets", "<" E33 "@b>", 0, F_UTF8, E_LOCAL, NO_WANT },
	{ "postmaster is short", "<Postmaster>", 0, F_PM, OK, 0,
	  "Postmaster", NULL, "", W_POSTMASTER },
	{ "label 63", "<a@" S63 ".com>", 0, 0, OK, 0,
	  "a", NULL, S63 ".com", 0 },
	{ "label 64", "<a@" S64 ".com>", 0, 0, E_DOMAIN, NO_WANT },
	{ "label 64 last", "<a@b." S64 ">", 0, 0, E_DOMAIN, NO_WANT },
	{ "route label 64", "<@" S64 ":a@b>", 0, 0, E_DOMAIN, NO_WANT },
	{ "domain 255 makes path 259", "<a@" D255 ">", 0, 0, E_PATH, NO_WANT },
	{ "domain 256", "<a@" D256 ">", 0, 0, E_DOMAIN, NO_WANT },
	{ "path 256", "<" S64 "@" D189 ">", 0, 0, OK, 0,
	  S64, NULL, D189, 0 },
	{ "path 257", "<" S64 "@" D190 ">", 0, 0, E_PATH, NO_WANT },
	{ "bare mailbox 254", S64 "@" D189 " SIZE=1", 0, F_BARE, OK, 254,
	  S64, NULL, D189, 0 },
	{ "bare mailbox 255", S64 "@" D190, 0, F_BARE, E_PATH, NO_WANT },
	{ "routed path 256", "<@x:" S64 "@" D186 ">", 0, 0, OK, 0,
	  S64, NULL, D186, W_ROUTE },
	{ "routed path 257", "<@x:" S64 "@" D187 ">", 0, 0, E_PATH, NO_WANT },
	{ "syntax before length", "<" S65 "@b", 0, 0, E_SYNTAX, NO_WANT },
	{ "syntax before length, domain", "<a@" D256 "_>", 0, 0, E_SYNTAX, NO_WANT },
	{ "local before domain", "<" S65 "@" D256 ">", 0, 0, E_LOCAL, NO_WANT },
};

/* Compare one parse result with a case; print each mismatch. */
static int
check_result(const char *what, const char *name, enum smtp_addr_error want,
    enum smtp_addr_error got, const struct smtp_addr *a,
    const char *want_local, const char *want_value, const char *want_domain,
    unsigned want_bits, size_t want_consumed, size_t got_consumed)
{
	static const struct smtp_addr zero;
	unsigned got_bits;
	int bad = 0;

	if (got != want) {
		print_error("%s \"%s\": want %s, got %s\n", what, name,
		    smtp_addr_strerror(want), smtp_addr_strerror(got));
		return 1;
	}
	if (got != SMTP_ADDR_OK) {
		if (memcmp(a, &zero, sizeof(zero)) != 0) {
			print_error("%s \"%s\": out not cleared on error\n",
			    what, name);
			bad = 1;
		}
		if (got_consumed != 0) {
			print_error("%s \"%s\": consumed %zu on error\n", what,
			    name, got_consumed);
			bad = 1;
		}
		return bad;
	}
	if (want_consumed != got_consumed) {
		print_error("%s \"%s\": want consumed %zu, got %zu\n", what,
		    name, want_consumed, got_consumed);
		bad = 1;
	}
	if (want_local != NULL && strcmp(want_local, a->local) != 0) {
		print_error("%s \"%s\": want local '%s', got '%s'\n", what,
		    name, want_local, a->local);
		bad = 1;
	}
	if (want_value == NULL)
		want_value = want_local;
	if (want_value != NULL && strcmp(want_value, a->local_value) != 0) {
		print_error("%s \"%s\": want local_value '%s', got '%s'\n",
		    what, name, want_value, a->local_value);
		bad = 1;
	}
	if (want_domain != NULL && strcmp(want_domain, a->domain) != 0) {
		print_error("%s \"%s\": want domain '%s', got '%s'\n", what,
		    name, want_domain, a->domain);
		bad = 1;
	}
	got_bits = (a->is_null ? W_NULL : 0) |
	    (a->is_postmaster ? W_POSTMASTER : 0) |
	    (a->is_quoted ? W_QUOTED : 0) | (a->is_literal ? W_LITERAL : 0) |
	    (a->has_utf8 ? W_UTF8 : 0) | (a->had_source_route ? W_ROUTE : 0);
	if (got_bits != want_bits) {
		print_error("%s \"%s\": want flags 0x%x, got 0x%x\n", what,
		    name, want_bits, got_bits);
		bad = 1;
	}
	return bad;
}

static void
test_parse_path_table(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]);
	    i++) {
		const struct path_case *tc = &path_cases[i];
		size_t len = tc->in_len != 0 ? tc->in_len : strlen(tc->in);
		struct smtp_addr a;
		size_t consumed = 12345;
		enum smtp_addr_error got;
		char *copy;

		/* An exact-size heap copy: ASan catches any read past len. */
		copy = malloc(len != 0 ? len : 1);
		assert_non_null(copy);
		memcpy(copy, tc->in, len);
		memset(&a, 0xA5, sizeof(a));
		got = smtp_addr_parse_path(copy, len, tc->flags, &a, &consumed);
		failures += check_result("parse_path", tc->name, tc->want, got,
		    &a, tc->want_local, tc->want_value, tc->want_domain,
		    tc->want_bits, tc->want_consumed != 0 ? tc->want_consumed : len,
		    consumed);
		free(copy);
	}
	assert_int_equal(failures, 0);
}

struct mailbox_case {
	const char *name;
	const char *in;
	unsigned flags;
	enum smtp_addr_error want;
	const char *want_local;
	const char *want_value;
	const char *want_domain;
	unsigned want_bits;
};

static const struct mailbox_case mailbox_cases[] = {
	{ "simple", "user@example.com", 0, OK, "user", NULL, "example.com", 0 },
	{ "quoted", "\"a b\"@c", 0, OK, "\"a b\"", "a b", "c", W_QUOTED },
	{ "literal", "a@[IPv6:::1]", 0, OK, "a", NULL, "[IPv6:::1]",
	  W_LITERAL },
	{ "utf8", "\xC3\xA9@\xC3\xA9", F_UTF8, OK, "\xC3\xA9", NULL,
	  "\xC3\xA9", W_UTF8 },
	{ "utf8 refused", "\xC3\xA9@x", 0, E_8BIT, MNO_WANT },
	{ "utf8 truncated at end", "a@b\xC3", F_UTF8, E_BADUTF8, MNO_WANT },
	{ "empty", "", F_ALL, E_SYNTAX, MNO_WANT },
	{ "brackets", "<a@b>", F_ALL, E_SYNTAX, MNO_WANT },
	{ "null", "<>", F_ALL, E_SYNTAX, MNO_WANT },
	{ "trailing space", "a@b ", F_ALL, E_SYNTAX, MNO_WANT },
	{ "trailing >", "a@b>", F_ALL, E_SYNTAX, MNO_WANT },
	{ "source route", "@a:b@c", F_ALL, E_SYNTAX, MNO_WANT },
	{ "no domain", "user", F_ALL & ~F_PM, E_SYNTAX, MNO_WANT },
	{ "postmaster", "PostMaster", F_PM, OK, "PostMaster", NULL, "",
	  W_POSTMASTER },
	{ "postmaster refused", "Postmaster", 0, E_SYNTAX, MNO_WANT },
	{ "double at", "user@other@local", 0, E_SYNTAX, MNO_WANT },
	{ "local 64", S64 "@b", 0, OK, S64, NULL, "b", 0 },
	{ "local 65", S65 "@b", 0, E_LOCAL, MNO_WANT },
	{ "mailbox 254", S64 "@" D189, 0, OK, S64, NULL, D189, 0 },
	{ "mailbox 255", S64 "@" D190, 0, E_PATH, MNO_WANT },
	{ "domain 254 (mailbox 256)", "a@" D254, 0, E_PATH, MNO_WANT },
	{ "domain 256", "a@" D256, 0, E_DOMAIN, MNO_WANT },
	{ "label 63", "a@" S63, 0, OK, "a", NULL, S63, 0 },
	{ "label 64", "a@" S64, 0, E_DOMAIN, MNO_WANT },
};

static void
test_parse_mailbox_table(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(mailbox_cases) / sizeof(mailbox_cases[0]);
	    i++) {
		const struct mailbox_case *tc = &mailbox_cases[i];
		size_t len = strlen(tc->in);
		struct smtp_addr a;
		enum smtp_addr_error got;
		char *copy = malloc(len != 0 ? len : 1);

		assert_non_null(copy);
		memcpy(copy, tc->in, len);
		memset(&a, 0xA5, sizeof(a));
		got = smtp_addr_parse_mailbox(copy, len, tc->flags, &a);
		failures += check_result("parse_mailbox", tc->name, tc->want,
		    got, &a, tc->want_local, tc->want_value, tc->want_domain,
		    tc->want_bits, 0, 0);
		free(copy);
	}
	assert_int_equal(failures, 0);
}

struct domain_case {
	const char *name;
	const char *in;
	unsigned flags;
	bool allow_literal;
	bool want;
};

static const struct domain_case domain_cases[] = {
	{ "simple", "example.com", 0, false, true },
	{ "single label", "localhost", 0, false, true },
	{ "empty", "", 0, true, false },
	{ "v4 literal", "[192.0.2.1]", 0, true, true },
	{ "v4 literal not allowed", "[192.0.2.1]", 0, false, false },
	{ "v6 literal", "[IPv6:2001:db8::1]", 0, true, true },
	{ "general literal", "[tag:x]", 0, true, true },
	{ "bad literal", "[1.2.3]", 0, true, false },
	{ "literal then junk", "[1.2.3.4]x", 0, true, false },
	{ "domain 255", D255, 0, false, true },
	{ "domain 256", D256, 0, false, false },
	{ "label 63", S63 ".com", 0, false, true },
	{ "label 64", S64 ".com", 0, false, false },
	{ "underscore", "_dmarc.example.com", 0, false, false },
	{ "trailing dot", "example.com.", 0, false, false },
	{ "space", "example.com ", 0, false, false },
	{ "utf8", "b\xC3\xBC" "cher.de", F_UTF8, false, true },
	{ "utf8 without flag", "b\xC3\xBC" "cher.de", 0, false, false },
	{ "utf8 malformed", "b\xC3" "cher.de", F_UTF8, false, false },
	{ "NUL", "a\0b", 0, false, false },
};

static void
test_valid_domain_table(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]);
	    i++) {
		const struct domain_case *tc = &domain_cases[i];
		/* "NUL" case: the input is 3 octets long. */
		size_t len = strcmp(tc->name, "NUL") == 0 ? 3 : strlen(tc->in);
		char *copy = malloc(len != 0 ? len : 1);
		bool got;

		assert_non_null(copy);
		memcpy(copy, tc->in, len);
		got = smtp_addr_valid_domain(copy, len, tc->flags,
		    tc->allow_literal);
		if (got != tc->want) {
			print_error("valid_domain \"%s\": want %d, got %d\n",
			    tc->name, tc->want, got);
			failures++;
		}
		free(copy);
	}
	assert_int_equal(failures, 0);
}

static void
test_format(void **state)
{
	struct smtp_addr a;
	size_t consumed;
	char buf[SMTP_ADDR_PATH_MAX];

	(void)state;
	assert_int_equal(smtp_addr_parse_path("<\"a b\"@c.d>", 11, 0, &a,
	    &consumed), SMTP_ADDR_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 9);
	assert_string_equal(buf, "\"a b\"@c.d");
	/* Exactly enough room, then one octet short. */
	assert_int_equal(smtp_addr_format(&a, buf, 10), 9);
	assert_string_equal(buf, "\"a b\"@c.d");
	assert_int_equal(smtp_addr_format(&a, buf, 9), -1);
	assert_string_equal(buf, "");
	assert_int_equal(smtp_addr_format(&a, buf, 0), -1);

	assert_int_equal(smtp_addr_parse_path("<>", 2, SMTP_ADDR_NULL_OK, &a,
	    &consumed), SMTP_ADDR_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_int_equal(smtp_addr_format(&a, buf, 1), 0);

	assert_int_equal(smtp_addr_parse_path("<postmaster>", 12,
	    SMTP_ADDR_POSTMASTER_OK, &a, &consumed), SMTP_ADDR_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "postmaster");

	/* The longest mailbox fits SMTP_ADDR_MAILBOX_MAX + 1. */
	assert_int_equal(smtp_addr_parse_mailbox(S64 "@" D189, 254, 0, &a),
	    SMTP_ADDR_OK);
	assert_int_equal(smtp_addr_format(&a, buf, SMTP_ADDR_MAILBOX_MAX + 1),
	    254);
	assert_string_equal(buf, S64 "@" D189);
}

static void
test_strerror(void **state)
{
	(void)state;
	for (int i = SMTP_ADDR_OK; i <= SMTP_ADDR_ERR_BAD_IDN; i++) {
		const char *s = smtp_addr_strerror((enum smtp_addr_error)i);

		assert_non_null(s);
		assert_true(strlen(s) > 0);
		for (int j = SMTP_ADDR_OK; j < i; j++)
			assert_string_not_equal(s,
			    smtp_addr_strerror((enum smtp_addr_error)j));
	}
}

/* Parse flags by combination: the same input under all 16 of them. */
static void
test_flag_combinations(void **state)
{
	(void)state;
	for (unsigned f = 0; f < 16; f++) {
		struct smtp_addr a;
		size_t consumed;

		assert_int_equal(smtp_addr_parse_path("<a@b> X", 7, f, &a,
		    &consumed), SMTP_ADDR_OK);
		assert_int_equal(consumed, 5);
		assert_int_equal(smtp_addr_parse_path("<>", 2, f, &a, &consumed),
		    (f & SMTP_ADDR_NULL_OK) ? SMTP_ADDR_OK
					    : SMTP_ADDR_ERR_NULL_NOT_ALLOWED);
		assert_int_equal(smtp_addr_parse_path("<Postmaster>", 12, f, &a,
		    &consumed), (f & SMTP_ADDR_POSTMASTER_OK) ? SMTP_ADDR_OK
		    : SMTP_ADDR_ERR_SYNTAX);
		assert_int_equal(smtp_addr_parse_path("a@b", 3, f, &a,
		    &consumed), (f & SMTP_ADDR_NO_BRACKETS_OK) ? SMTP_ADDR_OK
		    : SMTP_ADDR_ERR_SYNTAX);
		assert_int_equal(smtp_addr_parse_path("<\xC3\xA9@b>", 6, f, &a,
		    &consumed), (f & SMTP_ADDR_UTF8) ? SMTP_ADDR_OK
		    : SMTP_ADDR_ERR_UTF8_NOT_ALLOWED);
	}
}

/* xtext (RFC 3461 4). */

struct xtext_case {
	const char *name;
	const char *in;
	int want_len;            /* -1: invalid */
	const char *want;        /* decoded octets (want_len of them) */
};

static const struct xtext_case xdecode_cases[] = {
	{ "empty", "", 0, "" },
	{ "plain", "abc", 3, "abc" },
	{ "all xchar specials", "!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~", 30,
	  "!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~" },
	{ "plus", "a+2Bb", 3, "a+b" },
	{ "equals", "+3D", 1, "=" },
	{ "space", "a+20b", 3, "a b" },
	{ "hexchar for xchar is fine", "+41", 1, "A" },
	{ "high octet", "+FF+80", 2, "\xFF\x80" },
	{ "NUL octet", "a+00b", 3, "a\0b" },
	{ "utf8 orcpt", "rfc822;j+C3+B6rg@x", 14, "rfc822;j\xC3\xB6rg@x" },
	{ "lowercase hex", "+2b", -1, NULL },
	{ "lowercase second digit", "+Fa", -1, NULL },
	{ "plus at end", "abc+", -1, NULL },
	{ "plus one digit", "abc+2", -1, NULL },
	{ "plus non hex", "+G0", -1, NULL },
	{ "plus plus", "++2B", -1, NULL },
	{ "raw equals", "a=b", -1, NULL },
	{ "raw space", "a b", -1, NULL },
	{ "raw TAB", "a\tb", -1, NULL },
	{ "raw DEL", "a\x7f", -1, NULL },
	{ "raw high octet", "a\xC3\xB6", -1, NULL },
	{ "raw CR", "a\r", -1, NULL },
};

static void
test_xtext_decode(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(xdecode_cases) / sizeof(xdecode_cases[0]);
	    i++) {
		const struct xtext_case *tc = &xdecode_cases[i];
		size_t len = strlen(tc->in);
		char out[64];
		int got = smtp_xtext_decode(tc->in, len, out, sizeof(out));
		bool valid = smtp_xtext_valid(tc->in, len);

		if (got != tc->want_len ||
		    (got >= 0 && (memcmp(out, tc->want, (size_t)got) != 0 ||
		    out[got] != '\0'))) {
			print_error("xtext_decode \"%s\": want %d, got %d\n",
			    tc->name, tc->want_len, got);
			failures++;
		}
		if (valid != (tc->want_len >= 0)) {
			print_error("xtext_valid \"%s\": want %d, got %d\n",
			    tc->name, tc->want_len >= 0, valid);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void
test_xtext_encode(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(smtp_xtext_encode("a+b=c d", 7, out, sizeof(out)),
	    13);
	assert_string_equal(out, "a+2Bb+3Dc+20d");
	assert_int_equal(smtp_xtext_encode("\xFF\x00\x7F~!", 5, out,
	    sizeof(out)), 11);
	assert_string_equal(out, "+FF+00+7F~!");
	assert_int_equal(smtp_xtext_encode("", 0, out, 1), 0);
	assert_string_equal(out, "");
	/* Room for exactly the output and its NUL, then one octet less. */
	assert_int_equal(smtp_xtext_encode("a b", 3, out, 6), 5);
	assert_string_equal(out, "a+20b");
	assert_int_equal(smtp_xtext_encode("a b", 3, out, 5), -1);
	assert_string_equal(out, "");
	assert_int_equal(smtp_xtext_encode("ab", 2, out, 2), -1);
	assert_int_equal(smtp_xtext_encode("a", 1, out, 0), -1);
	/* Decode bounds the same way. */
	assert_int_equal(smtp_xtext_decode("a+20b", 5, out, 4), 3);
	assert_int_equal(smtp_xtext_decode("a+20b", 5, out, 3), -1);
	assert_int_equal(smtp_xtext_decode("", 0, out, 0), -1);
	/* Only len octets are read: the '=' beyond is never seen. */
	assert_int_equal(smtp_xtext_decode("ab=", 2, out, sizeof(out)), 2);
	assert_true(smtp_xtext_valid("ab=", 2));
	assert_false(smtp_xtext_valid("ab+2", 4));
}

static void
test_xtext_round_trip(void **state)
{
	unsigned char all[256];
	char enc[256 * 3 + 1], dec[257];
	static const char *const samples[] = {
		"", "plain", "a+b", "=", "+2B", "rfc822;user@example.com",
		"with space", "j\303\266rg@b\303\274cher.example",
	};

	(void)state;
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	assert_int_equal(smtp_xtext_encode((const char *)all, 256, enc,
	    sizeof(enc)), 92 + 3 * 164);
	assert_true(smtp_xtext_valid(enc, strlen(enc)));
	assert_int_equal(smtp_xtext_decode(enc, strlen(enc), dec, sizeof(dec)),
	    256);
	assert_memory_equal(dec, all, 256);

	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		size_t n = strlen(samples[i]);
		int e = smtp_xtext_encode(samples[i], n, enc, sizeof(enc));

		assert_true(e >= 0);
		assert_true(smtp_xtext_valid(enc, (size_t)e));
		assert_int_equal(smtp_xtext_decode(enc, (size_t)e, dec,
		    sizeof(dec)), (int)n);
		assert_memory_equal(dec, samples[i], n);
	}
}

/*
 * The isemail test set (tests/data/isemail/tests.xml, see its README.md).
 * A deliberately small reader: comments are skipped, each <test> element
 * gives its id attribute and its address, category and diagnosis
 * children, and text is unescaped for the five named XML entities and
 * numeric references. U+2400..U+241F ("SYMBOL FOR" control n) become the
 * control octet n; other code points become UTF-8.
 */

#define ISEMAIL_CASES 164
#define ISEMAIL_FILE_MAX (1024 * 1024)
#define ISEMAIL_FIELD_MAX 1024

struct isemail_case {
	char id[16];
	char address[ISEMAIL_FIELD_MAX];
	size_t address_len;
	char category[64];
	char diagnosis[64];
};

static const char *
find_n(const char *hay, const char *end, const char *needle)
{
	size_t n = strlen(needle);

	for (const char *s = hay; s != NULL && (size_t)(end - s) >= n; s++) {
		s = memchr(s, needle[0], (size_t)(end - s));
		if (s == NULL || (size_t)(end - s) < n)
			return NULL;
		if (memcmp(s, needle, n) == 0)
			return s;
	}
	return NULL;
}

static size_t
utf8_put(unsigned long cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Unescape XML text (s, n) into out; returns the length or -1. */
static long
xml_unescape(const char *s, size_t n, char *out, size_t outsize)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {
		{ "amp", '&' }, { "lt", '<' }, { "gt", '>' },
		{ "quot", '"' }, { "apos", '\'' },
	};
	size_t i = 0, o = 0;

	while (i < n) {
		char tmp[4];
		size_t tn = 1;

		if (s[i] != '&') {
			tmp[0] = s[i++];
		} else {
			const char *semi = memchr(s + i, ';', n - i);
			size_t elen, k;

			if (semi == NULL)
				return -1;
			elen = (size_t)(semi - (s + i)) - 1;   /* between & and ; */
			if (elen >= 2 && s[i + 1] == '#') {
				unsigned long cp = 0;
				bool hex = s[i + 2] == 'x' || s[i + 2] == 'X';
				size_t start = i + (hex ? 3 : 2);

				if (start >= (size_t)(semi - s))
					return -1;
				for (k = start; k < (size_t)(semi - s); k++) {
					char c = s[k];
					unsigned d;

					if (c >= '0' && c <= '9')
						d = (unsigned)(c - '0');
					else if (hex && c >= 'a' && c <= 'f')
						d = (unsigned)(c - 'a' + 10);
					else if (hex && c >= 'A' && c <= 'F')
						d = (unsigned)(c - 'A' + 10);
					else
						return -1;
					cp = cp * (hex ? 16 : 10) + d;
					if (cp > 0x10FFFF)
						return -1;
				}
				if (cp >= 0x2400 && cp <= 0x241F)
					tmp[0] = (char)(cp - 0x2400);
				else
					tn = utf8_put(cp, tmp);
			} else {
				for (k = 0; k < sizeof(named) / sizeof(named[0]);
				    k++)
					if (strlen(named[k].name) == elen &&
					    memcmp(s + i + 1, named[k].name,
					    elen) == 0)
						break;
				if (k == sizeof(named) / sizeof(named[0]))
					return -1;
				tmp[0] = named[k].c;
			}
			i = (size_t)(semi - s) + 1;
		}
		if (o + tn >= outsize)
			return -1;
		memcpy(out + o, tmp, tn);
		o += tn;
	}
	out[o] = '\0';
	return (long)o;
}

/*
 * Text of child element <tag> within (s, end): "<tag/>" gives "", a
 * missing element is an error. Returns the unescaped length or -1.
 */
static long
xml_child(const char *s, const char *end, const char *tag, char *out,
    size_t outsize)
{
	char open[32], close[32], empty[32];
	const char *a, *b;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	snprintf(empty, sizeof(empty), "<%s/>", tag);
	a = find_n(s, end, open);
	if (a == NULL) {
		if (find_n(s, end, empty) == NULL || outsize == 0)
			return -1;
		out[0] = '\0';
		return 0;
	}
	a += strlen(open);
	b = find_n(a, end, close);
	if (b == NULL)
		return -1;
	return xml_unescape(a, (size_t)(b - a), out, outsize);
}

static const char *
isemail_path(char *buf, size_t bufsize)
{
	const char *env = getenv("TERN_TESTDATA");
	struct stat st;

	if (env == NULL || env[0] == '\0')
		return "tests/data/isemail/tests.xml";
	/* TERN_TESTDATA may name the file or the tests/data directory. */
	if (stat(env, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(buf, bufsize, "%s/isemail/tests.xml", env);
		return buf;
	}
	return env;
}

/* Read every <test> of the file; returns the count or -1. */
static int
isemail_read(const char *path, struct isemail_case *cases, int max)
{
	FILE *f = fopen(path, "rb");
	char *text;
	size_t n;
	const char *s, *end;
	int count = 0;

	if (f == NULL) {
		print_error("isemail: cannot open %s\n", path);
		return -1;
	}
	text = malloc(ISEMAIL_FILE_MAX);
	assert_non_null(text);
	n = fread(text, 1, ISEMAIL_FILE_MAX, f);
	fclose(f);
	if (n == ISEMAIL_FILE_MAX) {
		print_error("isemail: %s is too big\n", path);
		free(text);
		return -1;
	}
	s = text;
	end = text + n;
	while ((s = memchr(s, '<', (size_t)(end - s))) != NULL) {
		const char *tend, *idp, *idq;
		struct isemail_case *tc;

		if ((size_t)(end - s) >= 4 && memcmp(s, "<!--", 4) == 0) {
			s = find_n(s + 4, end, "-->");
			if (s == NULL)
				break;
			s += 3;
			continue;
		}
		if ((size_t)(end - s) < 6 || memcmp(s, "<test", 5) != 0 ||
		    (s[5] != ' ' && s[5] != '>')) {
			s++;
			continue;
		}
		tend = find_n(s, end, "</test>");
		if (tend == NULL || count >= max)
			goto bad;
		tc = &cases[count];
		idp = find_n(s, tend, "id=\"");
		if (idp == NULL)
			goto bad;
		idp += 4;
		idq = memchr(idp, '"', (size_t)(tend - idp));
		if (idq == NULL || (size_t)(idq - idp) >= sizeof(tc->id))
			goto bad;
		memcpy(tc->id, idp, (size_t)(idq - idp));
		tc->id[idq - idp] = '\0';
		{
			long al = xml_child(s, tend, "address", tc->address,
			    sizeof(tc->address));

			if (al < 0 ||
			    xml_child(s, tend, "category", tc->category,
			    sizeof(tc->category)) < 0 ||
			    xml_child(s, tend, "diagnosis", tc->diagnosis,
			    sizeof(tc->diagnosis)) < 0) {
				print_error("isemail: test id %s unreadable\n",
				    tc->id);
				goto bad;
			}
			tc->address_len = (size_t)al;
		}
		count++;
		s = tend + 7;
	}
	free(text);
	return count;
bad:
	free(text);
	return -1;
}

/* Sanity of the reader itself on a few known cases. */
static void
isemail_check_reader(const struct isemail_case *cases, int n)
{
	bool seen1 = false, seen19 = false, seen57 = false, seen160 = false;

	for (int i = 0; i < n; i++) {
		const struct isemail_case *tc = &cases[i];

		if (strcmp(tc->id, "1") == 0) {
			assert_int_equal(tc->address_len, 0);
			seen1 = true;
		} else if (strcmp(tc->id, "19") == 0) {
			assert_string_equal(tc->address,
			    "!#$%&`*+/=?^`{|}~@iana.org");
			seen19 = true;
		} else if (strcmp(tc->id, "57") == 0) {
			/* &#x2400; is NUL: the length keeps it. */
			assert_int_equal(tc->address_len, 16);
			assert_memory_equal(tc->address, "\"test\0\"@iana.org",
			    16);
			seen57 = true;
		} else if (strcmp(tc->id, "160") == 0) {
			assert_string_equal(tc->address,
			    "\"test\\\xC2\xA9\"@iana.org");
			seen160 = true;
		}
	}
	assert_true(seen1 && seen19 && seen57 && seen160);
}

static void
test_isemail(void **state)
{
	struct isemail_case *cases;
	char pathbuf[4096];
	const char *path = isemail_path(pathbuf, sizeof(pathbuf));
	int n, failures = 0;

	(void)state;
	cases = calloc(ISEMAIL_CASES + 1, sizeof(*cases));
	assert_non_null(cases);
	n = isemail_read(path, cases, ISEMAIL_CASES + 1);
	if (n != ISEMAIL_CASES) {
		free(cases);
		print_error("isemail: read %d cases from %s, want %d\n", n,
		    path, ISEMAIL_CASES);
		fail();
	}
	isemail_check_reader(cases, n);

	for (int i = 0; i < n; i++) {
		const struct isemail_case *tc = &cases[i];
		const char *cat = tc->category;
		bool want_ok, either, got_ok, path_ok;
		struct smtp_addr a;
		enum smtp_addr_error err, perr;
		char *copy, pbuf[ISEMAIL_FIELD_MAX + 2];
		size_t consumed = 0;

		if (strcmp(cat, "ISEMAIL_VALID_CATEGORY") == 0 ||
		    strcmp(cat, "ISEMAIL_DNSWARN") == 0 ||
		    strcmp(cat, "ISEMAIL_RFC5321") == 0) {
			want_ok = true;
		} else if (strcmp(cat, "ISEMAIL_CFWS") == 0 ||
		    strcmp(cat, "ISEMAIL_DEPREC") == 0 ||
		    strcmp(cat, "ISEMAIL_RFC5322") == 0 ||
		    strcmp(cat, "ISEMAIL_ERR") == 0) {
			want_ok = false;
		} else {
			print_error("isemail id %s: unknown category %s\n",
			    tc->id, cat);
			failures++;
			continue;
		}
		/* "::" for one group: outside RFC 5321 4.1.3, either way. */
		either = strcmp(tc->diagnosis,
		    "ISEMAIL_RFC5321_IPV6DEPRECATED") == 0;

		copy = malloc(tc->address_len != 0 ? tc->address_len : 1);
		assert_non_null(copy);
		memcpy(copy, tc->address, tc->address_len);
		err = smtp_addr_parse_mailbox(copy, tc->address_len, 0, &a);
		free(copy);
		got_ok = err == SMTP_ADDR_OK;
		if (got_ok != want_ok && !either) {
			print_error("isemail id %s '%s' (%s, %s): want %s, "
			    "got %s\n", tc->id, tc->address, cat,
			    tc->diagnosis, want_ok ? "accept" : "reject",
			    smtp_addr_strerror(err));
			failures++;
		}

		/* The same mailbox in a path must get the same verdict. */
		pbuf[0] = '<';
		memcpy(pbuf + 1, tc->address, tc->address_len);
		pbuf[tc->address_len + 1] = '>';
		perr = smtp_addr_parse_path(pbuf, tc->address_len + 2, 0, &a,
		    &consumed);
		path_ok = perr == SMTP_ADDR_OK;
		if (path_ok != got_ok ||
		    (path_ok && consumed != tc->address_len + 2)) {
			print_error("isemail id %s '%s': parse_mailbox %s but "
			    "parse_path %s\n", tc->id, tc->address,
			    smtp_addr_strerror(err), smtp_addr_strerror(perr));
			failures++;
		}
	}
	free(cases);
	assert_int_equal(failures, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_path_table),
		cmocka_unit_test(test_parse_mailbox_table),
		cmocka_unit_test(test_valid_domain_table),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_flag_combinations),
		cmocka_unit_test(test_xtext_decode),
		cmocka_unit_test(test_xtext_encode),
		cmocka_unit_test(test_xtext_round_trip),
		cmocka_unit_test(test_isemail),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
